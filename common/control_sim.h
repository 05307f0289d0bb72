// Trace-driven simulation of an eenn-device's queue under load-aware exits:
// the real LoadController (common/load_controller.h) decides, fed the way
// device/load_control.cc feeds it (arrivals, the busy stretch, service
// observations at completion, a decision every interval and
// one brought forward when an arrival finds the queue at its high-water mark),
// while a discrete-event queue with c workers and a finite waiting room serves
// the arrivals with service times drawn from each configuration's exit shares.
// Deterministic for a seed. Used by eenn-control-sim to study the controller
// (seconds per run instead of minutes on the real daemons) and by the tests to
// pin its behaviour on a bursty trace. Torch-free.
//
// Service time of a request taken under configuration c and leaving at exit g:
//   fixed_ms * n1 + speed_factor * exit_device_ms[g] * n2 + remote * n3,
// remote = for offloaded requests, remote_ms, plus with local_fallback the
// device's own compute of the rest of the network (speed_factor times the
// full network's compute less exit_device_ms[g]); n1, n2, n3 are independent
// log-normal draws with mean 1 and coefficient of variation noise_cv (so the
// total varies less). With arrival_work_ms (one worker), each arrival during a
// service adds that much to it (the device's request handling on the
// worker's core, common/queueing.h arrival_work_s); the observation the
// controller gets then holds it, spread over the parts in proportion, with
// the stolen time and the arrivals. Accuracy: each answered request counts
// its configuration's expected accuracy.
#ifndef EENN_COMMON_CONTROL_SIM_H_
#define EENN_COMMON_CONTROL_SIM_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config_set.h"
#include "common/load_controller.h"

namespace eenn::common {

struct SimServiceModel {
  double fixed_ms = 0.7;      // per request, whatever the configuration
  double speed_factor = 1.0;  // measured / expected device compute
  double remote_ms = 0;       // offloaded requests: encode + round trip (mean)
  bool local_fallback = false;  // offloaded requests finish on the device (no server)
  double noise_cv = 0.1;
  double arrival_work_ms = 0;  // added to the service in progress by each arrival (one worker only)
};

struct SimOptions {
  LoadControllerOptions controller;  // workers and queue capacity are the queue's
  double interval_s = 0.1;           // decision period
  double min_tick_gap_s = 0.01;      // least gap between decisions brought forward
  bool busy_rate = true;             // the busy stretch's rate (LoadController::SetBusyStretch)
  double window_s = 1;               // report windows (by arrival time)
  uint64_t seed = 1;
  int static_config = -1;            // >= 0: no controller, this configuration throughout
};

struct SimWindow {
  double start_s = 0;
  int64_t arrivals = 0, refused = 0, answered = 0;
  double accuracy = 0;    // mean expected accuracy of the answered (0 when none)
  double mean_config = 0; // of the answered
};

struct SimResult {
  int64_t arrivals = 0, refused = 0, answered = 0;
  double loss_ratio = 0;  // refused / arrivals
  double accuracy = 0;    // mean expected accuracy of the answered
  int changes = 0;
  double arrival_work_ms = 0;  // the controller's estimate at the end (0 when off or static)
  std::vector<SimWindow> windows;
  struct Change {
    double t_s = 0;
    int config = 0;
    double rate_used = 0;  // the rate the decision used
    double smoothed_rate = 0, window_rate = 0, busy_rate = 0;  // the estimates it came from
    int queue = 0;         // requests waiting then
  };
  std::vector<Change> config_changes;
};

// InvalidArgument for unsorted or negative arrival times, a static
// configuration out of range, bad controller options or service model.
absl::StatusOr<SimResult> SimulateLoadControl(const ConfigSet& set, const std::vector<double>& arrivals_s,
                                              const SimServiceModel& service, const SimOptions& options);

// An on/off trace: `cycles` times a calm phase of `calm_s` seconds at
// `calm_rate` then a burst of `burst_s` at `burst_rate` (arrivals per second),
// evenly spaced (as tools/bench/load_control_compare.py makes it) or Poisson
// within each phase (seeded).
std::vector<double> OnOffTrace(double calm_rate, double calm_s, double burst_rate, double burst_s, int cycles,
                               bool poisson, uint64_t seed);

// A set of one configuration for the same exits: every request on the device
// to the final exit, `service_ms` mean service under `service` (its fixed part
// included), `accuracy` expected: a device with fixed thresholds, known by its
// measured service time, to simulate side by side with a controlled one.
ConfigSet FixedDeviceSet(const ConfigSet& like, double service_ms, double accuracy, const SimServiceModel& service);

}  // namespace eenn::common

#endif  // EENN_COMMON_CONTROL_SIM_H_
