#include "device/metrics.h"

#include "common/latency_buckets.h"
#include "proto/wire.h"

namespace eenn::device {

DeviceMetrics::DeviceMetrics(prometheus::Registry& registry, const std::string& model,
                             const std::string& version, const std::vector<int>& exit_layers) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  requests_ = &BuildCounter()
                   .Name("eenn_device_requests_total")
                   .Help("Classify requests finished, by outcome (device, server, fallback, rejected, "
                         "failed) and gRPC status code")
                   .Register(registry);
  for (const char* o : {"device", "server", "fallback"}) ok_[o] = &requests_->Add({{"outcome", o}, {"code", "OK"}});
  requests_->Add({{"outcome", "rejected"}, {"code", "RESOURCE_EXHAUSTED"}});
  auto& fallbacks = BuildCounter()
                        .Name("eenn_device_fallbacks_total")
                        .Help("Requests finished locally after the offload was impossible, failed or declined (server busy), by reason")
                        .Register(registry);
  for (const char* r : {"unavailable", "deadline", "overloaded", "busy", "refused", "incompatible", "error"}) {
    fallbacks_[r] = &fallbacks.Add({{"reason", r}});
  }
  auto& stage = BuildHistogram()
                    .Name("eenn_device_stage_duration_seconds")
                    .Help("Time per Classify request spent in each stage")
                    .Register(registry);
  const auto b = common::LatencyBucketsSeconds();
  queue_seconds = &stage.Add({{"stage", "queue"}}, b);
  preprocess_seconds = &stage.Add({{"stage", "preprocess"}}, b);
  device_compute_seconds = &stage.Add({{"stage", "device_compute"}}, b);
  encode_seconds = &stage.Add({{"stage", "encode"}}, b);
  offload_seconds = &stage.Add({{"stage", "offload_rpc"}}, b);
  server_queue_seconds = &stage.Add({{"stage", "server_queue"}}, b);
  server_compute_seconds = &stage.Add({{"stage", "server_compute"}}, b);
  fallback_seconds = &stage.Add({{"stage", "fallback"}}, b);
  end_to_end_seconds = &stage.Add({{"stage", "end_to_end"}}, b);
  auto& bytes = BuildCounter()
                    .Name("eenn_device_offload_bytes_total")
                    .Help("gRPC payload bytes of Resume calls, by direction")
                    .Register(registry);
  sent_bytes = &bytes.Add({{"direction", "sent"}});
  received_bytes = &bytes.Add({{"direction", "received"}});
  offloads = &BuildCounter()
                  .Name("eenn_device_offloads_total")
                  .Help("Resume calls that the server answered")
                  .Register(registry)
                  .Add({});
  auto& exits = BuildCounter()
                    .Name("eenn_device_exits_total")
                    .Help("Answered requests by the exit layer that answered (device or server side)")
                    .Register(registry);
  for (int l : exit_layers) exits_[l] = &exits.Add({{"exit_layer", std::to_string(l)}});
  queue_depth = &BuildGauge().Name("eenn_device_queue_depth").Help("Requests waiting in the input queue").Register(registry).Add({});
  worker_busy_seconds = &BuildCounter()
                             .Name("eenn_device_worker_busy_seconds_total")
                             .Help("Wall time the workers spent on requests, from taking one off the queue to being "
                                   "ready for the next (reply hand-off included)")
                             .Register(registry)
                             .Add({});
  worker_cpu_seconds = &BuildCounter()
                            .Name("eenn_device_worker_cpu_seconds_total")
                            .Help("CPU time of the worker threads themselves over the same spans as "
                                  "eenn_device_worker_busy_seconds_total (busy less this: time other threads took, "
                                  "when LibTorch runs one thread)")
                            .Register(registry)
                            .Add({});
  arrivals_while_busy = &BuildCounter()
                             .Name("eenn_device_arrivals_while_busy_total")
                             .Help("Requests that arrived (accepted or refused) while a worker was busy, once per "
                                   "busy worker")
                             .Register(registry)
                             .Add({});
  queue_capacity = &BuildGauge()
                        .Name("eenn_device_queue_capacity")
                        .Help("Requests the input queue holds before rejecting")
                        .Register(registry)
                        .Add({});
  split_layer = &BuildGauge()
                     .Name("eenn_device_split_layer")
                     .Help("Current split layer: the device runs layers below it")
                     .Register(registry)
                     .Add({});
  server_available = &BuildGauge()
                          .Name("eenn_device_server_available")
                          .Help("1 when the offload server is reachable and serves the same model and version")
                          .Register(registry)
                          .Add({});
  auto gauge = [&](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Register(registry).Add({});
  };
  server_expected_rtt = gauge("eenn_device_server_expected_rtt_seconds",
                              "Server-aware offloading: expected offload round trip from the server's load");
  server_base_rtt = gauge("eenn_device_server_base_rtt_seconds",
                          "Server-aware offloading: the expected round trip without the server's queue wait");
  local_finish = gauge("eenn_device_local_finish_seconds",
                       "Server-aware offloading: expected time to finish a request on the device from the split");
  server_queue_fill = gauge("eenn_device_server_queue_fill",
                            "The offload server's reported queue depth over its capacity");
  link_bandwidth = gauge("eenn_device_link_bandwidth_bytes_per_second",
                         "Live planner: estimated bandwidth to the offload server");
  link_rtt = gauge("eenn_device_link_rtt_seconds", "Live planner: estimated round trip to the offload server");
  server_speed_factor = gauge("eenn_device_server_speed_factor",
                              "Live planner: the server's measured compute over its profiled compute");
  plan_best_split = gauge("eenn_device_plan_best_split", "Live planner: the best split under the estimates");
  plan_expected = gauge("eenn_device_plan_expected_seconds",
                        "Live planner: expected end-to-end latency of the current split under the estimates");
  split_changes = &BuildCounter()
                       .Name("eenn_device_split_changes_total")
                       .Help("Live planner: times the split was moved")
                       .Register(registry)
                       .Add({});
  exit_config = gauge("eenn_device_exit_config",
                      "Load control: index of the exit configuration in use (0 = the most accurate; -1 = off)");
  exit_config_accuracy = gauge("eenn_device_exit_config_accuracy",
                               "Load control: validation accuracy of the exit configuration in use");
  predicted_loss = gauge("eenn_device_predicted_loss_ratio",
                         "Load control: predicted loss ratio of the configuration in use at the current load");
  arrival_rate = gauge("eenn_device_arrival_rate", "Load control: smoothed arrival rate, requests per second");
  arrival_work = gauge("eenn_device_arrival_work_seconds",
                       "Load control: the work each arrival takes from a service in progress, as its model uses it "
                       "(one worker, one LibTorch thread; else 0)");
  exit_config_changes = &BuildCounter()
                             .Name("eenn_device_exit_config_changes_total")
                             .Help("Load control: times the exit configuration was changed")
                             .Register(registry)
                             .Add({});
  exit_config->Set(-1);
  BuildGauge()
      .Name("eenn_device_model_info")
      .Help("The served model (always 1; the labels carry name and version)")
      .Register(registry)
      .Add({{"model", model}, {"version", version}})
      .Set(1);
}

void DeviceMetrics::RequestDone(const std::string& outcome, absl::StatusCode code) {
  auto it = code == absl::StatusCode::kOk ? ok_.find(outcome) : ok_.end();
  if (it != ok_.end()) {
    it->second->Increment();  // the hot path: no label hashing or family lock
  } else {
    requests_->Add({{"outcome", outcome}, {"code", wire::CodeName(code)}}).Increment();
  }
}

void DeviceMetrics::ExitTaken(int exit_layer) {
  auto it = exits_.find(exit_layer);
  if (it != exits_.end()) it->second->Increment();
}

void DeviceMetrics::Fallback(const std::string& reason) {
  auto it = fallbacks_.find(reason);
  (it != fallbacks_.end() ? it : fallbacks_.find("error"))->second->Increment();
}

}  // namespace eenn::device
