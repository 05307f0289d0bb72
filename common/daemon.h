// Process plumbing shared by eenn-server and eenn-device main()s: termination
// signals, the ready file that tells scripts and tests the chosen ports, and
// the Prometheus HTTP exposer.
#ifndef EENN_COMMON_DAEMON_H_
#define EENN_COMMON_DAEMON_H_

#include <memory>
#include <thread>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace eenn::common {

// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts
// later. Call first thing in main().
void BlockTerminationSignals();

// Waits for SIGTERM or SIGINT (blocked by BlockTerminationSignals) and
// returns its number.
int WaitForTerminationSignal();

// Writes `contents` to `path` atomically (a temporary file, then rename).
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);

// Writes {"grpc_port": ..., "metrics_port": ..., "pid": ...} to `path`
// atomically: what scripts and tests wait for when a daemon binds port 0.
absl::Status WriteReadyFile(const std::string& path, int grpc_port, int metrics_port);

// A minimal HTTP/1.0 server for Prometheus scrapes: GET /metrics answers the
// registry in the text exposition format (0.0.4); anything else gets 404.
// One connection at a time on its own thread (scrapes are rare and small).
// eenn does not use prometheus-cpp's civetweb exposer: in a process that also
// loads LibTorch it fails to start its worker threads on Debian 12.
class MetricsServer {
 public:
  // Binds `address` ("host:port" with an IPv4 host or "0.0.0.0"; port 0
  // picks one). Unavailable when it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                              std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();  // stops and joins
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  void Serve();
  int fd_ = -1;
  int port_ = 0;
  std::shared_ptr<prometheus::Registry> registry_;
  std::thread thread_;
};

}  // namespace eenn::common

#endif  // EENN_COMMON_DAEMON_H_
