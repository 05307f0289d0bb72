// Prometheus metrics of eenn-server, built from an injected registry (main.cc
// owns the registry and its HTTP exposer; tests read the registry directly).
// Every metric is documented in the README's metrics table.
//
// Thread-safety: all members are prometheus-cpp metrics, safe to update from
// any thread. Label values are bound once, here.
#ifndef EENN_SERVER_METRICS_H_
#define EENN_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace eenn::server {

class ServerMetrics {
 public:
  // `exit_layers`: the bundle's exits (one counter each).
  ServerMetrics(prometheus::Registry& registry, const std::string& model, const std::string& version,
                const std::vector<int>& exit_layers);

  // One finished Resume request (unary or one stream message) with its code.
  void RequestDone(absl::StatusCode code) {
    const int c = static_cast<int>(code);
    requests_[c >= 0 && c < 17 ? c : static_cast<int>(absl::StatusCode::kUnknown)]->Increment();
  }
  void ExitTaken(int exit_layer);

  prometheus::Histogram* decode_seconds;   // validate + decode the tensor
  prometheus::Histogram* queue_seconds;    // wait in the batcher's queue
  prometheus::Histogram* compute_seconds;  // the batch forward (per request: its batch's time)
  prometheus::Histogram* total_seconds;    // receipt to reply
  prometheus::Histogram* batch_size;       // samples per successful forward pass
  prometheus::Counter* samples;            // samples resumed by successful forwards
  prometheus::Counter* received_bytes;     // request payload bytes
  prometheus::Counter* sent_bytes;         // reply payload bytes
  prometheus::Gauge* queue_depth;          // requests waiting now
  prometheus::Gauge* queue_capacity;
  prometheus::Gauge* ready;                // 1 when serving, 0 while starting or draining

 private:
  std::array<prometheus::Counter*, 17> requests_{};
  std::map<int, prometheus::Counter*> exits_;
};

}  // namespace eenn::server

#endif  // EENN_SERVER_METRICS_H_
