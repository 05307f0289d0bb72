// The edge device's engine: preprocesses each request (OpenCV), runs layers
// [0, split) and the exits among them, and when none fires encodes the split
// tensor and offloads it to eenn-server with a deadline. When the server is
// unreachable, too slow, overloaded, refusing or serves another model, it
// finishes the request locally (fallback), so every accepted request is
// answered. Torch-free header; the gRPC service (edge_service.cc) and local
// sources (source.cc) feed it.
//
// Request lifecycle: Submit() -> queued (bounded; RESOURCE_EXHAUSTED and
// counted as rejected when full, UNAVAILABLE once draining) -> a worker
// preprocesses and runs the device part -> decided on device, or offloaded ->
// decided on the server, or finished locally (fallback) -> callback.
// Every submitted request's callback runs exactly once.
//
// Server state: a request whose offload fails with UNAVAILABLE (or
// DEADLINE_EXCEEDED, without the server load gate) marks the server down; later requests fall back at once
// instead of waiting for their own timeouts. A monitor thread probes the
// server (GetModelInfo) every probe_interval while it is down or unverified
// and marks it up again once it answers with the same model name and version.
// A server serving another model or version is never offloaded to.
//
// Server load: with options.server_load.enabled, a request is offloaded only
// when the server's reported and measured load (ServerLoadGate) says its
// answer fits the request's budget; otherwise it is finished locally at once
// (a fallback with reason "server busy"), and the monitor refreshes the load
// with GetModelInfo every server_load.refresh_interval while that lasts.
//
// Thread-safety: all public methods may be called from any thread.
#ifndef EENN_DEVICE_EDGE_ENGINE_H_
#define EENN_DEVICE_EDGE_ENGINE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/image.h"
#include "common/manifest.h"
#include "common/model_spec.h"
#include "common/tensor_codec.h"
#include "device/offload_client.h"
#include "device/server_load.h"

namespace eenn::device {

class DeviceMetrics;

// One successful offload, as the device saw it (for the live planner).
struct OffloadObservation {
  int split_layer = 0;
  int64_t request_bytes = 0;      // serialized Resume request
  int64_t reply_bytes = 0;
  int64_t round_trip_us = 0;      // the Resume RPC
  int64_t server_queue_us = 0;    // reported by the server
  int64_t server_compute_us = 0;  // reported by the server
};

// One finished request's service on the device (for the load controller).
struct ServiceSample {
  int exit_config = -1;           // the exit configuration it ran under (-1: the bundle's thresholds)
  int exit_index = 0;             // the exit that answered
  int64_t preprocess_us = 0;
  int64_t device_compute_us = 0;  // layers [0, split) and their exits
  int64_t remote_us = 0;          // encode + offload, or the local fallback (0 when decided on the device)
  int64_t busy_us = 0;            // the worker's whole occupancy: dequeue to ready for the next request
                                  // (decode, bookkeeping and the reply hand-off included)
  int64_t cpu_us = -1;            // the worker thread's own CPU time over busy_us (-1: unknown, or not its
                                  // work alone: LibTorch runs more than one thread)
  int64_t arrivals = 0;           // requests that arrived (accepted or refused) meanwhile
  bool offloaded = false;         // no device exit answered it
};

struct EdgeEngineOptions {
  // Layers [0, split) run on the device; 0 sends the preprocessed input,
  // num_layers never offloads. -1: just after the last early exit.
  int split_layer = -1;
  common::EncodeOptions wire;  // encoding of the split tensor
  int workers = 2;             // requests processed at once
  int queue_capacity = 64;     // requests waiting; more are rejected
  absl::Duration offload_timeout = absl::Milliseconds(1000);  // deadline of each Resume call
  absl::Duration probe_interval = absl::Milliseconds(500);    // server probes while it is down
  // Server-aware offloading (server_load.h): finish locally instead of
  // offloading when the server's load says the answer would not come back
  // within the request's budget. While it declines, the monitor refreshes the
  // server's load every server_load.refresh_interval.
  ServerLoadOptions server_load;
  common::DecodeLimits decode_limits;  // for uploaded images
  bool warmup = true;
  // Called after every successful offload, on the worker thread (must be
  // cheap and thread-safe). Optional.
  std::function<void(const OffloadObservation&)> on_offload;
  // Called for every submitted request (accepted or refused), on the
  // submitting thread, and for every answered one, on the worker. Optional;
  // must be cheap and thread-safe.
  std::function<void()> on_arrival;
  std::function<void(const ServiceSample&)> on_service;
};

enum class Decision { kDevice = 1, kServer = 2, kFallback = 3 };
const char* DecisionName(Decision d);  // "device", "server", "fallback"

struct ClassifyInput {
  std::string request_id;
  // Exactly one of: encoded image bytes, a decoded image (BGR or gray, any
  // size), or a preprocessed tensor [1, C, H, W].
  std::string image_bytes;
  cv::Mat image;
  std::optional<common::EncodedTensor> tensor;
  std::optional<int> split_layer;  // overrides the engine's split for this request
  absl::Time deadline = absl::InfiniteFuture();
};

struct StageTimes {
  int64_t queue_us = 0, preprocess_us = 0, device_compute_us = 0, encode_us = 0, offload_us = 0,
          server_queue_us = 0, server_compute_us = 0, fallback_us = 0, total_us = 0;
};

struct ClassifyOutcome {
  std::string request_id;
  common::ExitResult result;        // confidences: device exits, then server/fallback exits
  std::string class_name;
  Decision decided = Decision::kDevice;
  StageTimes timings;
  int64_t offload_bytes = 0;  // serialized Resume request, when offloaded
  int split_layer = 0;
  std::string fallback_reason;
};

struct ServerState {
  bool available = false;  // reachable and compatible: offloading is on
  std::string detail;      // why not, or what it serves
};

class EdgeEngine {
 public:
  using Callback = std::function<void(absl::StatusOr<ClassifyOutcome>)>;

  // Loads the bundle (LoadBundle's errors); InvalidArgument for a split out
  // of [0, num_layers]. `client` may be null (no server: everything local).
  // `metrics` may be null and must outlive the engine.
  static absl::StatusOr<std::unique_ptr<EdgeEngine>> Create(const std::string& bundle_dir,
                                                            const EdgeEngineOptions& options,
                                                            std::unique_ptr<OffloadClient> client,
                                                            DeviceMetrics* metrics);
  ~EdgeEngine();  // Shutdown(0)

  const common::ServedModel& model() const;
  int split_layer() const;
  absl::Status SetSplitLayer(int split);  // InvalidArgument when out of [0, num_layers]
  // Exit configuration for the requests that start from now on: the split and
  // one threshold per exit, numbered `index` in reports. InvalidArgument for a
  // split out of range or a threshold count that is not the model's.
  absl::Status SetExitConfig(int index, int split, const std::vector<float>& thresholds);
  int exit_config() const;  // -1 until SetExitConfig: the bundle's thresholds
  // The offload client (null without a server), for link probes. Thread-safe.
  OffloadClient* offload_client() const;
  ServerState server_state() const;
  ServerLoadState server_load() const;
  // Checks the server now (as the monitor does) and returns the new state.
  ServerState ProbeServer();

  // Queues a request. `done` runs exactly once: inline when refused, else on a
  // worker. Errors: RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (draining),
  // INVALID_ARGUMENT (undecodable image or tensor), DEADLINE_EXCEEDED (its
  // deadline passed in the queue), INTERNAL (model failure).
  void Submit(ClassifyInput input, Callback done);
  // Submit and wait.
  absl::StatusOr<ClassifyOutcome> ClassifySync(ClassifyInput input);

  void StopAccepting();
  // StopAccepting, wait up to `timeout` for queued and running requests,
  // fail what is left with UNAVAILABLE, stop the workers and the monitor.
  void Shutdown(absl::Duration timeout);

  int queue_depth() const;

 private:
  class Impl;
  explicit EdgeEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace eenn::device

#endif  // EENN_DEVICE_EDGE_ENGINE_H_
