// The offload server's engine: validates resume jobs against the loaded
// bundle, queues them, groups concurrent jobs with the same split layer into
// one forward pass (dynamic batching, like a group commit) and runs layers
// [split, end) with the bundle's exits. Torch-free header: the gRPC service
// (offload_service.cc) hands it decoded floats and gets ExitResults back.
//
// Request lifecycle: Admit() -> a place in the queue is held while the caller
// decodes the tensor (bounded in requests and in decoded bytes;
// RESOURCE_EXHAUSTED when full, UNAVAILABLE once draining, so a refused
// request is never decoded) -> Submit() -> queued -> picked by an executor
// thread into a batch (DEADLINE_EXCEEDED if its deadline passed while queued)
// -> executing -> done (callback with the result) or failed (callback with
// INTERNAL). Every submitted job's callback runs exactly once.
//
// Thread-safety: all public methods may be called from any thread.
#ifndef EENN_SERVER_OFFLOAD_ENGINE_H_
#define EENN_SERVER_OFFLOAD_ENGINE_H_

#include <cstdint>
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
  int max_batch_size = 32;  // samples per forward pass, a hard limit
  // How long the batcher holds the oldest job waiting for more with the same split.
  absl::Duration max_queue_delay = absl::Microseconds(1000);
  int queue_capacity = 256;  // jobs waiting (or being decoded); more are refused with RESOURCE_EXHAUSTED
  // Decoded float32 bytes those jobs may hold together; more are refused with
  // RESOURCE_EXHAUSTED. Must fit one largest request (max_request_samples at
  // the split with the largest input).
  int64_t max_queued_bytes = int64_t{256} << 20;
  int max_request_samples = 0;  // samples in one job, <= max_batch_size; 0: max_batch_size
  int executors = 1;            // executor threads (each runs one batch at a time)
  bool warmup = true;           // run each split once at start so the first request is not slow
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
  // The server's throughput in samples/s: samples of successful forwards per
  // second of wall-clock time during which at least one executor was busy
  // (all executors together), over windows of kServiceRateWindow busy time,
  // exponentially smoothed; before the first window ends, over the time so
  // far. 0 until a forward succeeded.
  double service_rate = 0;
};

class OffloadEngine {
  class Impl;

 public:
  using Callback = std::function<void(absl::StatusOr<ResumeResult>)>;

  // Busy time per service-rate measurement (see LoadSnapshot::service_rate).
  static constexpr absl::Duration kServiceRateWindow = absl::Milliseconds(500);

  // A place in the queue, held for one job from Admit() until Submit() (or
  // until it is destroyed unused, which gives the place back). Move-only; it
  // must not outlive its engine.
  class Admission {
   public:
    Admission() = default;
    Admission(Admission&& other) noexcept;
    Admission& operator=(Admission&& other) noexcept;
    ~Admission();

   private:
    friend class OffloadEngine;
    void Release();
    Impl* impl_ = nullptr;
    int64_t bytes_ = 0;
  };

  // Loads the bundle (LoadBundle's errors), starts the executors. `metrics`
  // may be null; it must outlive the engine. InvalidArgument for inconsistent
  // options (max_request_samples > max_batch_size, max_queued_bytes below one
  // largest request, ...); max_request_samples 0 becomes max_batch_size.
  static absl::StatusOr<std::unique_ptr<OffloadEngine>> Create(const std::string& bundle_dir,
                                                               const OffloadEngineOptions& options,
                                                               ServerMetrics* metrics);
  ~OffloadEngine();  // Shutdown(0)

  const common::ServedModel& model() const;
  const OffloadEngineOptions& options() const;

  // InvalidArgument, naming what differs, unless 0 <= split < num_layers and
  // shape == [n, <input shape of layer split>] with 1 <= n <= max_request_samples.
  absl::Status ValidateShape(int split, const std::vector<int64_t>& shape) const;

  // Holds a place in the queue for a job of `shape` at `split` before its
  // tensor is decoded: ValidateShape's errors, RESOURCE_EXHAUSTED when the
  // queue already holds queue_capacity jobs or the job's decoded bytes would
  // take the queue past max_queued_bytes, UNAVAILABLE once draining. Cheap: it
  // allocates nothing.
  absl::StatusOr<Admission> Admit(int split, const std::vector<int64_t>& shape);

  // Queues a job admitted with its split and shape. `done` runs exactly once:
  // inline when refused (UNAVAILABLE once draining), otherwise on an executor
  // thread.
  void Submit(Admission admission, ResumeJob job, Callback done);
  // Admit, then Submit; Admit's errors go to `done`, inline.
  void Submit(ResumeJob job, Callback done);

  // New jobs are refused with UNAVAILABLE from now on.
  void StopAccepting();
  // StopAccepting, then waits up to `timeout` for queued and running jobs to
  // finish; whatever is still queued afterwards fails with UNAVAILABLE. Stops
  // the executors.
  void Shutdown(absl::Duration timeout);

  LoadSnapshot Load() const;

 private:
  explicit OffloadEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace eenn::server

#endif  // EENN_SERVER_OFFLOAD_ENGINE_H_
