// The offload server's engine: validates resume jobs against the loaded
// bundle, queues them, groups concurrent jobs with the same split layer into
// one forward pass (dynamic batching, like a group commit) and runs layers
// [split, end) with the bundle's exits. Torch-free header: the gRPC service
// (offload_service.cc) hands it decoded floats and gets ExitResults back.
//
// Request lifecycle: Submit() -> queued (bounded; RESOURCE_EXHAUSTED when
// full, UNAVAILABLE once draining) -> picked by an executor thread into a
// batch (DEADLINE_EXCEEDED if its deadline passed while queued) -> executing
// -> done (callback with the result) or failed (callback with INTERNAL).
// Every submitted job's callback runs exactly once.
//
// Thread-safety: all public methods may be called from any thread.
#ifndef EENN_SERVER_OFFLOAD_ENGINE_H_
#define EENN_SERVER_OFFLOAD_ENGINE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/manifest.h"
#include "common/model_spec.h"

namespace eenn::server {

class ServerMetrics;

struct OffloadEngineOptions {
  int max_batch_size = 32;  // samples per forward pass
  // How long the batcher holds the oldest job waiting for more with the same split.
  absl::Duration max_queue_delay = absl::Microseconds(1000);
  int queue_capacity = 256;      // jobs waiting; more are refused with RESOURCE_EXHAUSTED
  int max_request_samples = 64;  // samples in one job
  int executors = 1;             // executor threads (each runs one batch at a time)
  bool warmup = true;            // run each split once at start so the first request is not slow
};

struct ResumeJob {
  int split_layer = 0;
  std::vector<int64_t> shape;  // [n, ...], validated by ValidateShape
  std::vector<float> values;   // n * per-sample elements
  absl::Time deadline = absl::InfiniteFuture();
};

struct ResumeResult {
  std::vector<common::ExitResult> predictions;  // one per sample
  int64_t queue_us = 0;
  int64_t compute_us = 0;
  int batch_size = 0;  // samples in the forward pass that served this job
};

struct LoadSnapshot {
  int queue_depth = 0;
  int queue_capacity = 0;
  double service_rate = 0;  // samples/s, exponentially smoothed over recent batches
};

class OffloadEngine {
 public:
  using Callback = std::function<void(absl::StatusOr<ResumeResult>)>;

  // Loads the bundle (LoadBundle's errors), starts the executors. `metrics`
  // may be null; it must outlive the engine.
  static absl::StatusOr<std::unique_ptr<OffloadEngine>> Create(const std::string& bundle_dir,
                                                               const OffloadEngineOptions& options,
                                                               ServerMetrics* metrics);
  ~OffloadEngine();  // Shutdown(0)

  const common::ServedModel& model() const;
  const OffloadEngineOptions& options() const;

  // InvalidArgument, naming what differs, unless 0 <= split < num_layers and
  // shape == [n, <input shape of layer split>] with 1 <= n <= max_request_samples.
  absl::Status ValidateShape(int split, const std::vector<int64_t>& shape) const;

  // Queues a validated job. `done` runs exactly once: inline when refused
  // (RESOURCE_EXHAUSTED, UNAVAILABLE), otherwise on an executor thread.
  void Submit(ResumeJob job, Callback done);

  // New jobs are refused with UNAVAILABLE from now on.
  void StopAccepting();
  // StopAccepting, then waits up to `timeout` for queued and running jobs to
  // finish; whatever is still queued afterwards fails with UNAVAILABLE. Stops
  // the executors.
  void Shutdown(absl::Duration timeout);

  LoadSnapshot Load() const;

 private:
  class Impl;
  explicit OffloadEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace eenn::server

#endif  // EENN_SERVER_OFFLOAD_ENGINE_H_
