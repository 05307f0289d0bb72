#include "server/metrics.h"

#include "common/latency_buckets.h"
#include "proto/wire.h"

namespace eenn::server {

ServerMetrics::ServerMetrics(prometheus::Registry& registry, const std::string& model,
                             const std::string& version, const std::vector<int>& exit_layers) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  auto& req = BuildCounter()
                  .Name("eenn_server_requests_total")
                  .Help("Resume requests answered, by gRPC status code")
                  .Register(registry);
  for (int c = 0; c < 17; ++c) requests_[c] = &req.Add({{"code", wire::CodeName(static_cast<absl::StatusCode>(c))}});
  auto& stage = BuildHistogram()
                    .Name("eenn_server_stage_duration_seconds")
                    .Help("Time per Resume request spent in each server stage")
                    .Register(registry);
  const auto b = common::LatencyBucketsSeconds();
  decode_seconds = &stage.Add({{"stage", "decode"}}, b);
  queue_seconds = &stage.Add({{"stage", "queue"}}, b);
  compute_seconds = &stage.Add({{"stage", "compute"}}, b);
  total_seconds = &stage.Add({{"stage", "total"}}, b);
  batch_size = &BuildHistogram()
                    .Name("eenn_server_batch_size")
                    .Help("Samples per successful forward pass formed by the dynamic batcher")
                    .Register(registry)
                    .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128});
  samples = &BuildCounter()
                 .Name("eenn_server_samples_total")
                 .Help("Samples resumed from a split layer (successful forward passes only)")
                 .Register(registry)
                 .Add({});
  auto& bytes = BuildCounter()
                    .Name("eenn_server_bytes_total")
                    .Help("gRPC payload bytes of Resume messages, by direction")
                    .Register(registry);
  received_bytes = &bytes.Add({{"direction", "received"}});
  sent_bytes = &bytes.Add({{"direction", "sent"}});
  auto& exits = BuildCounter()
                    .Name("eenn_server_exits_total")
                    .Help("Samples answered on the server, by exit layer")
                    .Register(registry);
  for (int l : exit_layers) exits_[l] = &exits.Add({{"exit_layer", std::to_string(l)}});
  queue_depth = &BuildGauge()
                     .Name("eenn_server_queue_depth")
                     .Help("Requests waiting for the batcher")
                     .Register(registry)
                     .Add({});
  queue_capacity = &BuildGauge()
                        .Name("eenn_server_queue_capacity")
                        .Help("Requests the queue holds before refusing with RESOURCE_EXHAUSTED")
                        .Register(registry)
                        .Add({});
  ready = &BuildGauge()
               .Name("eenn_server_ready")
               .Help("1 while the server accepts requests, 0 while starting or draining")
               .Register(registry)
               .Add({});
  BuildGauge()
      .Name("eenn_server_model_info")
      .Help("The served model (always 1; the labels carry name and version)")
      .Register(registry)
      .Add({{"model", model}, {"version", version}})
      .Set(1);
}

void ServerMetrics::ExitTaken(int exit_layer) {
  auto it = exits_.find(exit_layer);
  if (it != exits_.end()) it->second->Increment();
}

}  // namespace eenn::server
