// Prometheus metrics of eenn-device, built from an injected registry (main.cc
// owns the registry and its exposer). Documented in the README's metrics table.
//
// Thread-safety: prometheus-cpp metrics are safe to update from any thread.
#ifndef EENN_DEVICE_METRICS_H_
#define EENN_DEVICE_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace eenn::device {

class DeviceMetrics {
 public:
  DeviceMetrics(prometheus::Registry& registry, const std::string& model, const std::string& version,
                const std::vector<int>& exit_layers);

  // A finished request: outcome is device, server, fallback, rejected or failed.
  void RequestDone(const std::string& outcome, absl::StatusCode code);
  void ExitTaken(int exit_layer);
  void Fallback(const std::string& reason);  // unavailable, deadline, overloaded, busy, refused, incompatible, error

  prometheus::Histogram* queue_seconds;
  prometheus::Histogram* preprocess_seconds;
  prometheus::Histogram* device_compute_seconds;
  prometheus::Histogram* encode_seconds;
  prometheus::Histogram* offload_seconds;         // the Resume RPC as the device saw it
  prometheus::Histogram* server_queue_seconds;    // reported by the server
  prometheus::Histogram* server_compute_seconds;  // reported by the server
  prometheus::Histogram* fallback_seconds;        // local completion after a failed offload
  prometheus::Histogram* end_to_end_seconds;      // receipt to reply
  prometheus::Counter* sent_bytes;
  prometheus::Counter* received_bytes;
  prometheus::Counter* offloads;
  prometheus::Gauge* queue_depth;
  // Wall time the workers spent on requests, from taking one off the queue
  // to being ready for the next (reply hand-off included): over the requests
  // done, the mean service time as the queue sees it; its rate over the
  // workers, their utilisation.
  prometheus::Counter* worker_busy_seconds;
  // The workers' own CPU time over the same spans (CLOCK_THREAD_CPUTIME_ID):
  // busy less this is the time other threads took from them (on a core the
  // worker shares with the request handling, the arrivals' work). With more
  // than one LibTorch thread the pool's CPU time is not in it.
  prometheus::Counter* worker_cpu_seconds;
  // Requests that arrived (accepted or refused) while a worker was busy,
  // counted once per busy worker: with worker_busy_seconds and
  // worker_cpu_seconds, the work each arrival takes from a service in
  // progress (eenn-queue --arrival_work_ms).
  prometheus::Counter* arrivals_while_busy;
  prometheus::Gauge* queue_capacity;
  prometheus::Gauge* split_layer;
  prometheus::Gauge* server_available;
  prometheus::Gauge* server_expected_rtt;  // seconds: the expected offload round trip (server-aware offloading)
  prometheus::Gauge* server_base_rtt;      // seconds: ... of it, everything but the server's queue
  prometheus::Gauge* local_finish;         // seconds: the expected local finish from the split
  prometheus::Gauge* server_queue_fill;    // the server's reported queue depth / capacity
  prometheus::Gauge* link_bandwidth;  // bytes per second
  prometheus::Gauge* link_rtt;        // seconds
  prometheus::Gauge* server_speed_factor;
  prometheus::Gauge* plan_best_split;
  prometheus::Gauge* plan_expected;   // seconds
  prometheus::Counter* split_changes;
  prometheus::Gauge* exit_config;           // load control: configuration index, -1 when off
  prometheus::Gauge* exit_config_accuracy;  // its validation accuracy
  prometheus::Gauge* predicted_loss;        // its predicted loss ratio now
  prometheus::Gauge* arrival_rate;          // smoothed, per second
  prometheus::Gauge* arrival_work;          // seconds each arrival takes from a service (one worker)
  prometheus::Counter* exit_config_changes;

 private:
  prometheus::Family<prometheus::Counter>* requests_;
  std::map<std::string, prometheus::Counter*> ok_;  // outcome -> its code="OK" counter, bound once
  std::map<std::string, prometheus::Counter*> fallbacks_;
  std::map<int, prometheus::Counter*> exits_;
};

}  // namespace eenn::device

#endif  // EENN_DEVICE_METRICS_H_
