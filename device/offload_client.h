// The device's path to the offload server, behind a small interface so the
// engine can be tested with fakes. GrpcOffloadClient is the real one: one
// channel to one or several eenn-server processes, a deadline on every call.
//
// Several servers: the channel balances calls round robin over every backend
// the target names (a list of addresses, or a DNS name with several records)
// and health-checks each one (grpc.health.v1, service ""), so a backend that
// is down or NOT_SERVING leaves the rotation. Resume and GetModelInfo are
// retried on UNAVAILABLE (a backend dying under a call), which lands on the
// next healthy backend; the channel only reports UNAVAILABLE once no backend
// answers, and then the engine falls back locally and probes as it does for
// one server.
//
// Thread-safety: implementations must allow concurrent calls.
#ifndef EENN_DEVICE_OFFLOAD_CLIENT_H_
#define EENN_DEVICE_OFFLOAD_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model_spec.h"
#include "common/tensor_codec.h"
#include "common/tls.h"
#include "device/server_load.h"

namespace eenn::device {

// What the server says it serves.
struct RemoteModel {
  std::string name;
  std::string version;
  std::string weights_sha256;
  int num_layers = 0;
  bool has_load = false;    // eenn-server reports its load
  ServerLoadReport load;
};

struct ResumeCall {
  std::string request_id;
  std::string model_name;
  std::string model_version;
  int split_layer = 0;
  common::EncodedTensor tensor;  // moved into the request
};

struct ResumeAnswer {
  std::vector<common::ExitResult> predictions;  // exit_index is not set (-1)
  int64_t server_queue_us = 0;
  int64_t server_compute_us = 0;
  int64_t request_bytes = 0;  // serialized request size
  int64_t reply_bytes = 0;    // serialized reply size
  ServerLoadReport server_load;  // reported by the server with its answer
};

class OffloadClient {
 public:
  virtual ~OffloadClient() = default;
  // The gRPC status of the call as an absl::Status (UNAVAILABLE,
  // DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ...).
  virtual absl::StatusOr<ResumeAnswer> Resume(ResumeCall call, absl::Duration timeout) = 0;
  virtual absl::StatusOr<RemoteModel> GetModelInfo(absl::Duration timeout) = 0;
  // Sends `padding_bytes` that the server discards (0: a bare round trip);
  // returns the serialized request size. Unimplemented unless overridden.
  virtual absl::StatusOr<int64_t> Probe(int64_t padding_bytes, absl::Duration timeout) {
    (void)padding_bytes;
    (void)timeout;
    return absl::UnimplementedError("this offload client cannot probe the link");
  }
  // Where it connects, for messages.
  virtual std::string target() const = 0;
};

// The gRPC target behind an eenn-device --server value.
struct ServerTarget {
  std::string uri;          // what the channel is created with
  int backends = 1;         // addresses known now (a DNS name counts as 1)
  std::string common_host;  // the host every entry names ("" when they differ)
};

// Accepts "host:port" and any gRPC target URI ("dns:///name:port",
// "ipv4:a:p,b:p", "ipv6:...", "unix:...") as they are, and a comma-separated
// list "host:port,host:port,[v6]:port": IP literals are used directly, host
// names are resolved now (every address of every name becomes a backend; use
// dns:/// to follow DNS changes). InvalidArgument for empty entries, missing
// or bad ports, and names that do not resolve.
absl::StatusOr<ServerTarget> ParseServerTarget(const std::string& server);

// The channel's service config: round robin, client-side health checking of
// the default service "", and retries of Resume and GetModelInfo on
// UNAVAILABLE (max_attempts in total).
std::string OffloadServiceConfig(int max_attempts);

struct GrpcOffloadClientOptions {
  std::string target;                    // an eenn-device --server value, see ParseServerTarget
  int max_message_bytes = 16 << 20;      // largest message sent or received
  common::TlsOptions tls;                // transport security of the hop
  int max_attempts = 3;                  // tries per Resume/GetModelInfo on UNAVAILABLE (1: no retry)
};

// Over TLS with a list naming different hosts, tls.server_name is required
// (the name every server's certificate carries); with one host it defaults
// to that host.
absl::StatusOr<std::unique_ptr<OffloadClient>> MakeGrpcOffloadClient(const GrpcOffloadClientOptions& options);

}  // namespace eenn::device

#endif  // EENN_DEVICE_OFFLOAD_CLIENT_H_
