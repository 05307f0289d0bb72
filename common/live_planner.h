// Live split planning: estimates the link (bandwidth, RTT) and the server's
// speed from the device's own offload traffic and probes, and decides when
// to move the split. Torch-free; eenn-device feeds it and applies its
// decisions.
//
// Estimates are exponentially weighted in time (a half-life in seconds), so
// they follow a link whose rate changes and forget old traffic at the same
// pace whether requests are frequent or rare.
#ifndef EENN_COMMON_LIVE_PLANNER_H_
#define EENN_COMMON_LIVE_PLANNER_H_

#include <optional>

#include "absl/status/statusor.h"
#include "common/planner.h"
#include "common/profile.h"

namespace eenn::common {

// A time-weighted moving average: after `half_life_s` seconds an old value
// weighs half as much as a new one.
class TimeEwma {
 public:
  explicit TimeEwma(double half_life_s) : half_life_s_(half_life_s) {}
  void Add(double value, double now_s);
  bool has_value() const { return has_value_; }
  double value() const { return value_; }

 private:
  double half_life_s_;
  bool has_value_ = false;
  double value_ = 0;
  double last_s_ = 0;
};

struct LinkEstimatorOptions {
  double half_life_s = 2.0;
  LinkEstimate initial;         // used until observations arrive
  // An offload whose transfer time (round trip less RTT and server time) is
  // below this says little about the bandwidth; it only updates the RTT.
  double min_transfer_ms = 0.05;
};

class LinkEstimator {
 public:
  explicit LinkEstimator(const LinkEstimatorOptions& options);

  // A round trip that carried `bytes` to the server (payload and framing,
  // 0 for a bare ping), took `round_trip_ms` as the device saw it, of which
  // the server reported spending `server_ms` (decode, queue, compute).
  void AddRoundTrip(double bytes, double round_trip_ms, double server_ms, double now_s);
  // The server's compute for a request next to what its profile predicted
  // for the same split: their ratio tracks the server's speed (load, a
  // different machine than profiled).
  void AddServerCompute(double measured_ms, double profiled_ms, double now_s);
  // Time a request waited in the server's queue.
  void AddServerQueue(double queue_ms, double now_s);

  LinkEstimate link() const;              // current bandwidth and RTT
  double server_speed_factor() const;     // measured / profiled, 1 until known
  double server_queue_ms() const;         // 0 until known
  int64_t round_trips() const { return round_trips_; }

 private:
  LinkEstimatorOptions options_;
  TimeEwma rtt_ms_;
  // Log of the transfer time per byte: a rate that rises tenfold is followed
  // as fast as one that falls tenfold (a plain average of time per byte
  // trails rises, one of rates trails falls).
  TimeEwma log_ms_per_byte_;
  TimeEwma speed_;
  TimeEwma queue_ms_;
  int64_t round_trips_ = 0;
};

struct SplitControllerOptions {
  PlanOptions plan;
  // Move only when the new split is expected to be faster by both margins.
  double min_gain_ms = 0.2;
  double min_gain_ratio = 0.05;
  // And not sooner than this after the previous move.
  double min_dwell_s = 1.0;
};

struct SplitDecision {
  int split = 0;          // the split to use from now on
  bool changed = false;   // it differs from the current one
  Plan plan;              // the plan under the current estimates
  double current_expected_ms = 0;
};

// Re-plans from the estimates and applies the hysteresis.
class SplitController {
 public:
  // InvalidArgument when the profiles do not describe the same model (see PlanSplits).
  static absl::StatusOr<SplitController> Create(Profile device, Profile server,
                                                const SplitControllerOptions& options);

  // The decision for a device now running `current_split`.
  absl::StatusOr<SplitDecision> Decide(const LinkEstimator& estimator, int current_split, double now_s);

  // The plan for hypothetical link conditions (unset fields: the estimator's).
  absl::StatusOr<Plan> PlanFor(const LinkEstimator& estimator, std::optional<double> bandwidth_mbps,
                               std::optional<double> rtt_ms) const;

  const Profile& device_profile() const { return device_; }
  const Profile& server_profile() const { return server_; }

 private:
  SplitController(Profile device, Profile server, const SplitControllerOptions& options)
      : device_(std::move(device)), server_(std::move(server)), options_(options) {}

  Profile device_, server_;
  SplitControllerOptions options_;
  double last_change_s_ = -1e300;
};

}  // namespace eenn::common

#endif  // EENN_COMMON_LIVE_PLANNER_H_
