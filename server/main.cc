// eenn-server: the offload server. Parses flags into options and wires the
// engine, the gRPC service, health, reflection and metrics together.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/registry.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/cli.h"
#include "common/daemon.h"
#include "common/manifest.h"
#include "common/threads.h"
#include "common/tls_flags.h"
#include "server/metrics.h"
#include "server/offload_engine.h"
#include "server/offload_service.h"

ABSL_FLAG(std::string, bundle, "", "Model bundle directory (required).");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC address to serve on (port 0 picks a free one).");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9091",
          "Prometheus /metrics address (port 0 picks one; empty disables).");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads (0 = all cores).");
ABSL_FLAG(int, max_batch_size, 32, "Samples per forward pass (dynamic batching), a hard limit.");
ABSL_FLAG(int, max_queue_delay_us, 1000,
          "How long the batcher holds the oldest request waiting for others with its split.");
ABSL_FLAG(int, queue_capacity, 256, "Requests waiting before RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_queued_mib, 256,
          "MiB of decoded tensors (float32) the waiting requests may hold together; a request that "
          "would take them past it is refused with RESOURCE_EXHAUSTED before it is decoded. Must fit "
          "one request of --max_request_samples at the split with the largest input.");
ABSL_FLAG(int, max_request_samples, 0,
          "Samples one Resume request may carry, at most --max_batch_size (0 = --max_batch_size).");
ABSL_FLAG(int, executors, 1, "Executor threads (each runs one batch at a time).");
ABSL_FLAG(int, max_message_bytes, 16 << 20, "Largest gRPC message accepted.");
ABSL_FLAG(double, drain_timeout_s, 10, "On SIGTERM, how long in-flight requests may take.");
ABSL_FLAG(double, max_connection_age_s, 0,
          "Close each client connection gracefully (GOAWAY) after this long, so that devices balancing over "
          "a DNS name re-resolve it and take up servers added since (0 = never).");
ABSL_FLAG(std::string, ready_file, "",
          "Write {\"grpc_port\", \"metrics_port\", \"pid\"} here once serving (for scripts and tests).");

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "eenn-server: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  eenn::common::BlockTerminationSignals();
  eenn::common::ParseFlags(argc, argv,
      "eenn-server --bundle DIR [--listen HOST:PORT] [options]");
  const std::string bundle = absl::GetFlag(FLAGS_bundle);
  if (bundle.empty()) return Fail(absl::InvalidArgumentError("--bundle is required"));
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) return Fail(s);

  auto manifest = eenn::common::ReadManifest(bundle);
  if (!manifest.ok()) return Fail(manifest.status());
  auto registry = std::make_shared<prometheus::Registry>();
  eenn::server::ServerMetrics metrics(*registry, manifest->model_name, manifest->model_version,
                                      manifest->spec.exit_layers);
  metrics.ready->Set(0);

  eenn::server::OffloadEngineOptions opts;
  opts.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  opts.max_queue_delay = absl::Microseconds(absl::GetFlag(FLAGS_max_queue_delay_us));
  opts.queue_capacity = absl::GetFlag(FLAGS_queue_capacity);
  if (absl::GetFlag(FLAGS_max_queued_mib) < 1) {
    return Fail(absl::InvalidArgumentError("--max_queued_mib must be >= 1"));
  }
  opts.max_queued_bytes = int64_t{absl::GetFlag(FLAGS_max_queued_mib)} << 20;
  opts.max_request_samples = absl::GetFlag(FLAGS_max_request_samples);
  opts.executors = absl::GetFlag(FLAGS_executors);
  auto engine = eenn::server::OffloadEngine::Create(bundle, opts, &metrics);
  if (!engine.ok()) return Fail(engine.status());

  std::unique_ptr<eenn::common::MetricsServer> metrics_server;
  int metrics_port = 0;
  if (!absl::GetFlag(FLAGS_metrics_address).empty()) {
    auto e = eenn::common::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_address), registry);
    if (!e.ok()) return Fail(e.status());
    metrics_server = std::move(*e);
    metrics_port = metrics_server->port();
  }

  eenn::server::OffloadServiceImpl service(engine->get(), &metrics);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  const eenn::common::TlsOptions tls = eenn::common::TlsFromFlags();
  auto credentials = eenn::common::MakeServerCredentials(tls);
  if (!credentials.ok()) return Fail(credentials.status());
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), *credentials, &grpc_port);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
  builder.SetMaxSendMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
  if (absl::GetFlag(FLAGS_max_connection_age_s) > 0) {
    // In-flight calls finish on the old connection (grace = the drain timeout).
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(absl::GetFlag(FLAGS_max_connection_age_s) * 1000));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(absl::GetFlag(FLAGS_drain_timeout_s) * 1000));
  }
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    return Fail(absl::UnavailableError(
        absl::StrCat("cannot serve gRPC on '", absl::GetFlag(FLAGS_listen), "'")));
  }
  auto* health = server->GetHealthCheckService();
  health->SetServingStatus(true);
  metrics.ready->Set(1);
  const auto& m = (*engine)->model();
  std::printf("eenn-server: serving model '%s' version '%s' (%s, %d layers) on port %d (%s), metrics on port %d\n",
              m.name.c_str(), m.version.c_str(), m.architecture.c_str(), m.num_layers, grpc_port,
              eenn::common::DescribeServer(tls).c_str(), metrics_port);
  std::fflush(stdout);
  if (!absl::GetFlag(FLAGS_ready_file).empty()) {
    auto s = eenn::common::WriteReadyFile(absl::GetFlag(FLAGS_ready_file), grpc_port, metrics_port);
    if (!s.ok()) return Fail(s);
  }

  const int sig = eenn::common::WaitForTerminationSignal();
  std::printf("eenn-server: signal %d, draining\n", sig);
  std::fflush(stdout);
  health->SetServingStatus(false);
  metrics.ready->Set(0);
  const absl::Duration drain = absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s));
  (*engine)->StopAccepting();
  // gRPC's Shutdown stops new RPCs and returns only when every call has its
  // answer; the engine drains alongside it and refuses (UNAVAILABLE) what it
  // has not run within `drain`, so the whole stop takes about `drain`.
  std::thread engine_drain([&] { (*engine)->Shutdown(drain); });
  server->Shutdown(absl::ToChronoTime(absl::Now() + drain));
  engine_drain.join();
  std::printf("eenn-server: stopped\n");
  return 0;
}
