// Load-aware exits in eenn-device: feeds a LoadController
// (common/load_controller.h) with the engine's arrivals and service times,
// decides every interval from the queue length, and swaps the engine's exit
// configuration (split and thresholds) when the controller moves. Exports its
// state as metrics and answers PlannerService queries.
//
// Thread-safety: OnArrival, OnService and State may be called from any thread.
#ifndef EENN_DEVICE_LOAD_CONTROL_H_
#define EENN_DEVICE_LOAD_CONTROL_H_

#include <atomic>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/config_set.h"
#include "common/load_controller.h"
#include "device/edge_engine.h"
#include "device/metrics.h"

namespace eenn::device {

struct LoadControlOptions {
  common::LoadControllerOptions controller;  // workers and queue capacity: the engine's
  absl::Duration interval = absl::Milliseconds(250);
  // With the controller's pressure_margin > 0, an arrival that finds the
  // queue at its high-water mark brings the next decision forward (a burst
  // is met within milliseconds, not at the next interval), at most once per
  // this gap.
  absl::Duration min_tick_gap = absl::Milliseconds(10);
  // The controller also sees the rate of the current busy stretch: the
  // arrivals since one last found no request waiting (a burst shows in it
  // from its first arrival on, without the calm before it).
  bool busy_rate = true;
  bool log = true;  // a line on stderr for every change
};

struct LoadControlSnapshot {
  common::ControllerState state;
  common::ExitConfig config;   // the one in use
  int num_configs = 0;
  double loss_target = 0;
};

class LoadControl {
 public:
  // `engine` and `metrics` (may be null) must outlive it. Applies the initial
  // configuration to the engine. InvalidArgument for configurations whose
  // split or thresholds do not fit the engine's model, or bad options.
  static absl::StatusOr<std::unique_ptr<LoadControl>> Create(EdgeEngine* engine, DeviceMetrics* metrics,
                                                             common::ConfigSet set, LoadControlOptions options);
  ~LoadControl();  // Stop()

  void Start();  // the decision thread
  void Stop();

  // From EdgeEngineOptions::on_arrival and on_service.
  void OnArrival();
  void OnService(const ServiceSample& s);

  // One decision now (the thread's body; public for tests).
  void Tick();

  LoadControlSnapshot State() const;

 private:
  LoadControl(EdgeEngine* engine, DeviceMetrics* metrics, common::LoadController controller,
              LoadControlOptions options);
  double NowS() const;
  void Publish(const common::ControllerState& s);

  EdgeEngine* engine_;
  DeviceMetrics* metrics_;
  LoadControlOptions options_;
  absl::Time start_;
  std::atomic<int64_t> arrivals_{0};
  // The busy stretch: arrivals and the time of the first and the last
  // (microseconds since start_) since one last found no request waiting.
  mutable absl::Mutex stretch_mu_;
  int64_t stretch_arrivals_ ABSL_GUARDED_BY(stretch_mu_) = 0;
  int64_t stretch_first_us_ ABSL_GUARDED_BY(stretch_mu_) = 0;
  int64_t stretch_last_us_ ABSL_GUARDED_BY(stretch_mu_) = 0;
  std::pair<int64_t, double> BusyStretch() const;  // (gaps, their span in s)

  // Workers only append here, so they never wait for a decision.
  absl::Mutex pending_mu_;
  std::vector<std::pair<common::ServiceObservation, double>> pending_ ABSL_GUARDED_BY(pending_mu_);

  mutable absl::Mutex mu_;
  common::LoadController controller_ ABSL_GUARDED_BY(mu_);

  int high_water_count_ = 0;  // queue length that brings a decision forward (0: never)
  absl::Mutex wake_mu_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::thread thread_;
};

}  // namespace eenn::device

#endif  // EENN_DEVICE_LOAD_CONTROL_H_
