// Live split planning in eenn-device: feeds a LinkEstimator from the
// engine's offloads and from periodic link probes (a bare round trip for the
// RTT, a padded one for the bandwidth, so the link stays measured even when
// nothing is offloaded), re-plans every interval and moves the engine's split
// when the controller says so. Answers plan queries for PlannerService.
//
// Thread-safety: OnOffload and Query may be called from any thread.
#ifndef EENN_DEVICE_SPLIT_PLANNER_H_
#define EENN_DEVICE_SPLIT_PLANNER_H_

#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/live_planner.h"
#include "device/edge_engine.h"
#include "device/metrics.h"

namespace eenn::device {

struct SplitPlannerOptions {
  common::Profile device_profile;
  common::Profile server_profile;
  common::SplitControllerOptions controller;
  common::LinkEstimatorOptions estimator;
  absl::Duration interval = absl::Milliseconds(500);  // re-plan period
  absl::Duration probe_interval = absl::Milliseconds(500);
  double probe_target_ms = 10;     // padded probes aim at this transfer time
  int64_t min_probe_bytes = 4096;
  int64_t max_probe_bytes = 1 << 20;
  bool log = true;                 // a line on stderr for every split change
};

struct PlanSnapshot {
  common::Plan plan;
  int current_split = 0;  // the link used is plan.link
  double server_speed_factor = 1, server_queue_ms = 0;
  int64_t round_trips = 0;
  bool hypothetical = false;
};

class SplitPlanner {
 public:
  // `engine` and `metrics` (may be null) must outlive the planner.
  // InvalidArgument when the profiles do not fit each other or the engine's model.
  static absl::StatusOr<std::unique_ptr<SplitPlanner>> Create(EdgeEngine* engine, DeviceMetrics* metrics,
                                                              SplitPlannerOptions options);
  ~SplitPlanner();  // Stop()

  void Start();  // the probe and re-plan thread
  void Stop();

  // From EdgeEngineOptions::on_offload.
  void OnOffload(const OffloadObservation& o);

  // The plan now, or for hypothetical link conditions.
  absl::StatusOr<PlanSnapshot> Query(std::optional<double> bandwidth_mbps, std::optional<double> rtt_ms);

  // One probe-and-decide round (the thread's body; public for tests).
  void Tick();

 private:
  SplitPlanner(EdgeEngine* engine, DeviceMetrics* metrics, SplitPlannerOptions options,
               common::SplitController controller, std::vector<double> server_ms_per_offload);
  void Probe(double now_s);
  double NowS() const;

  EdgeEngine* engine_;
  DeviceMetrics* metrics_;
  SplitPlannerOptions options_;
  absl::Time start_;
  const std::vector<double> server_expected_ms_;  // profiled server compute of a sample sent at split s

  mutable absl::Mutex mu_;
  common::LinkEstimator estimator_ ABSL_GUARDED_BY(mu_);
  common::SplitController controller_ ABSL_GUARDED_BY(mu_);
  double last_probe_s_ ABSL_GUARDED_BY(mu_) = -1e300;

  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace eenn::device

#endif  // EENN_DEVICE_SPLIT_PLANNER_H_
