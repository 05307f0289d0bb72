// Load-aware choice of exit configuration (CEED) for eenn-device: from the
// arrival rate, the queue length and the measured service times, picks the
// most accurate configuration of a ConfigSet (common/config_set.h) whose
// predicted loss ratio stays under a target. Torch-free; the device feeds it
// and applies its choice.
//
// Service time of a request under configuration c (what a worker is busy
// with): a fixed part (preprocessing, bookkeeping, the reply hand-off: the
// worker's whole occupancy less the parts below; measured), the device
// compute of the exit it leaves at (the configuration's expected compute per
// exit, scaled by a measured speed factor = measured / expected compute), and
// for offloaded requests the remote part (encode, round trip or local
// fallback; measured). Its mean and SCV follow from the configuration's exit
// shares; the loss ratio of the device's queue (c = workers, K = queue
// capacity + workers) comes from the M/G/1/K predictor (common/queueing.h)
// with the c workers pooled into one server c times as fast (fast enough for
// a control loop; see load_controller.cc),
// with the offered load rounded to 1% (geometric steps) and the SCV to 0.05
// so that solves are cached and a tick stays cheap. With one worker and
// observations that carry the time other threads took from it
// (ServiceObservation::stolen_ms, arrivals), the arrivals' own work on its
// core enters the model too (common/queueing.h, arrival_work_s): the
// measured parts less the mean stolen time are the service without it, and
// the work per arrival is added back at the rate predicted for.
//
// Decisions, each tick. The arrival rate is measured over two windows of
// ticks, a short one (`burst_window_s`, a burst shows in it at once) and a
// long one (`rate_window_s`, steadier); each gives a lower and an upper bound
// (n -/+ rate_z sqrt(n) arrivals in the window), so that a move takes
// evidence rather than one lucky tick (arrivals are noisy: taking the point
// estimate, the largest of a burst's ticks would ratchet the configuration
// down well past what the burst needs):
//  * the rate used to go down is the larger lower bound; with the queue at
//    or above the high-water mark, also the lower bound of the busy
//    stretch's rate (SetBusyStretch: the arrivals since one last found no
//    request waiting, so a burst shows in it from its first arrival on,
//    without the calm before it that any window still holds);
//    with the queue at high water at every tick for `pressure_settle_s`
//    under a configuration in use at least as long, the service model
//    evidently overestimates that configuration, so the rate used is at
//    least its capacity times (1 + pressure_margin); and the backlog beyond
//    the mark is added as extra rate to drain within `drain_s`;
//  * down (cheaper) at once: when the current configuration's predicted loss
//    exceeds the target, move to the most accurate one that meets it (the
//    cheapest when none does);
//  * up (more accurate) only with margin and dwell: the most accurate
//    configuration whose predicted loss at the larger upper bound times
//    (1 + up_rate_margin) is at most target * up_loss_margin, once such a
//    more accurate one has been available for `dwell_s` without a break,
//    and the queue is below the high-water mark.
#ifndef EENN_COMMON_LOAD_CONTROLLER_H_
#define EENN_COMMON_LOAD_CONTROLLER_H_

#include <deque>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config_set.h"

namespace eenn::common {

struct LoadControllerOptions {
  double loss_target = 0.01;     // loss ratio to stay under
  int workers = 2;               // eenn-device --workers
  int queue_capacity = 64;       // eenn-device --queue_capacity
  double rate_half_life_s = 2.0; // smoothing of the arrival rate (reported, not decided on)
  double burst_window_s = 0.5;   // the short window (at least one tick) that a burst shows in at once
  double rate_window_s = 1.0;    // the long window, whose rate is steadier
  double rate_z = 1.0;           // rate bounds: n -/+ rate_z sqrt(n) arrivals in a window (0: point estimates)
  double busy_z = 0.5;           // the busy stretch's lower bound: n - busy_z sqrt(n) (no calm in it to dilute
                                 // it; only the clumping that filled the queue inflates it)
  double service_half_life_s = 5.0;  // smoothing of the measured service parts
  double high_water = 0.75;      // share of the queue capacity
  double drain_s = 1.0;          // backlog above the high-water mark is drained within this
  double pressure_margin = 0.1;  // queue at high water: rate used >= capacity in use x (1 + this); 0: off
  double pressure_settle_s = 0.5;  // ... once the queue has been at high water, and the configuration
                                   // in use, for this long
  double up_loss_margin = 0.8;   // up only to a configuration predicted under target * this ...
  double up_rate_margin = 0.05;  // ... at the upper rate bound times (1 + this) ...
  // Model the arrivals' own work on the worker's core (one worker only; off:
  // the measured service times as they are). Opt-in: see README.
  bool arrival_work = false;
  double dwell_s = 3.0;          // ... available for this long without a break
  int initial_config = 0;        // index into the set (0: the most accurate)
  // Service parts assumed until measured.
  double initial_fixed_ms = 0;
  double initial_remote_ms = 0;
};

// One finished request, as the worker timed it.
struct ServiceObservation {
  int config = 0;          // index of the configuration it ran under
  int exit = 0;            // index of the exit that answered
  double device_ms = 0;    // device compute (layers [0, split) and their exits)
  double remote_ms = 0;    // offloaded: encode + round trip, or the local fallback; 0 otherwise
  double fixed_ms = 0;     // the rest of the worker's occupancy (preprocessing, hand-off, ...)
  bool offloaded = false;  // no device exit answered it
  // The core time other threads took from the worker during this service
  // (its busy time less its own CPU time; < 0: not measured, e.g. offloaded:
  // the worker waited for the round trip) and the requests that arrived
  // meanwhile. With one worker and options.arrival_work they give the
  // arrivals' own work on its core (the slope of stolen time over arrivals
  // per service; what does not grow with arrivals stays in the service),
  // which the loss model takes (common/queueing.h, arrival_work_s): a burst
  // slows the very services that have to absorb it.
  double stolen_ms = -1;
  int64_t arrivals = 0;
};

struct ConfigPrediction {
  double service_mean_ms = 0;  // at the rate predicted for (the arrivals' work included; inf if it saturates)
  double base_service_mean_ms = 0;  // without the arrivals' work (= service_mean_ms when it is not modelled)
  double service_scv = 0;           // of the service without the arrivals' work
  double loss = 0;         // predicted loss ratio at the rate used
};

struct ControllerState {
  int config = 0;                // the configuration in use
  bool changed = false;          // this tick moved it
  int changes = 0;               // moves so far
  double arrival_rate = 0;       // smoothed, per second
  double last_rate = 0;          // over the last burst window
  double rate_used = 0;          // the rate the down decision used (backlog included)
  int queue_length = 0;
  double speed_factor = 1;       // measured / expected device compute
  double fixed_ms = 0, remote_ms = 0;
  // options.arrival_work with one worker: the work each arrival takes from a
  // service in progress, and the share of the busy time it took at the rate
  // measured (both 0 until measured, and when off).
  double arrival_work_ms = 0, work_share = 0;
  double expected_accuracy = 0;  // of the configuration in use
  double predicted_loss = 0;     // of the configuration in use, at rate_used
  std::vector<ConfigPrediction> predictions;  // per configuration, at rate_used
};

class LoadController {
 public:
  // InvalidArgument for an empty set, a target outside (0, 1), workers < 1,
  // queue capacity < 1 or an initial configuration out of range.
  static absl::StatusOr<LoadController> Create(ConfigSet set, const LoadControllerOptions& options);

  // `count` requests arrived (accepted or refused) by `now_s`.
  void AddArrivals(int64_t count);
  // The busy stretch, for the next Tick: the arrivals since one last found
  // no request waiting, as `gaps` inter-arrival gaps spanning `span_s` (N
  // arrivals: N - 1 gaps from the first to the last). 0: none.
  void SetBusyStretch(int64_t gaps, double span_s) {
    stretch_gaps_ = gaps;
    stretch_span_s_ = span_s;
  }
  void AddService(const ServiceObservation& o, double now_s);
  // Decides at `now_s` with `queue_length` requests waiting.
  ControllerState Tick(int queue_length, double now_s);

  // The predicted loss and service of every configuration at a rate.
  std::vector<ConfigPrediction> Predict(double rate_per_s) const;

  const ConfigSet& set() const { return set_; }
  const LoadControllerOptions& options() const { return options_; }
  const ControllerState& state() const { return state_; }

 private:
  LoadController(ConfigSet set, const LoadControllerOptions& options);
  ConfigPrediction PredictOne(int c, double rate_per_s) const;
  // offered_load: lambda E[S0] (without the arrivals' work); work_load: lambda W.
  double Loss(double offered_load, double scv, double work_load) const;

  ConfigSet set_;
  LoadControllerOptions options_;
  ControllerState state_;
  int64_t arrivals_since_tick_ = 0;
  int64_t stretch_gaps_ = 0;  // the busy stretch: inter-arrival gaps and their span
  double stretch_span_s_ = 0;
  double high_since_s_ = -1;  // the queue has been at high water at every tick since then (-1: not now)
  std::deque<std::pair<double, int64_t>> recent_;  // (tick length, arrivals) of the last ticks
  double last_tick_s_ = -1;
  bool rate_known_ = false;
  double up_since_s_ = -1;  // a more accurate configuration has qualified since then
  double config_since_s_ = -1;  // the configuration in use since then (-1: since the start)
  // Time-weighted averages of the service parts.
  double measured_device_ = 0, expected_device_ = 0;
  double last_service_s_ = -1;
  bool fixed_known_ = false, remote_known_ = false;
  // Time-weighted sums for the arrivals' work (a: arrivals during a service,
  // s: stolen ms, b: busy ms): n, sum a, a^2, s, a s, b.
  double work_n_ = 0, work_a_ = 0, work_aa_ = 0, work_s_ = 0, work_as_ = 0, work_b_ = 0;
  // Predicted loss by (offered load lambda E[S0] in 1% geometric steps, SCV in
  // steps of 0.05, lambda W in steps of 0.005): the queue solve takes
  // milliseconds near saturation.
  mutable std::map<std::tuple<int, int, int>, double> loss_cache_;
};

}  // namespace eenn::common

#endif  // EENN_COMMON_LOAD_CONTROLLER_H_
