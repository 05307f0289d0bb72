// eenn-device: the edge daemon. Parses flags into options and wires the
// engine, the offload client, the gRPC service, health, reflection, metrics
// and an optional local source together.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/cli.h"
#include "common/config_set.h"
#include "common/manifest.h"
#include "common/daemon.h"
#include "common/threads.h"
#include "common/tls_flags.h"
#include "device/edge_engine.h"
#include "device/edge_service.h"
#include "device/load_control.h"
#include "device/metrics.h"
#include "device/offload_client.h"
#include "device/planner_service.h"
#include "device/split_planner.h"
#include "common/profile.h"
#include "device/source.h"

ABSL_FLAG(std::string, bundle, "", "Model bundle directory (required; the server must serve the same).");
ABSL_FLAG(std::string, listen, "0.0.0.0:50052",
          "gRPC address for EdgeService (port 0 picks one; empty: no gRPC, with --source only).");
ABSL_FLAG(std::string, server, "",
          "Offload server(s): host:port, a list host:port,host:port,... or dns:///name:port (several "
          "servers: round robin over the healthy ones); empty: everything runs on the device.");
ABSL_FLAG(int, server_attempts, 3,
          "Tries of an offload that fails with UNAVAILABLE (a server going away), each on the next healthy "
          "server, before the device finishes it locally (1..5).");
ABSL_FLAG(bool, server_plaintext, false,
          "No transport security on the hop to --server (must be chosen explicitly; --plaintext is "
          "for the listening side).");
ABSL_FLAG(std::string, server_tls_ca, "",
          "PEM CA bundle the server's certificate must chain to (default: --tls_ca, else the "
          "system's roots).");
ABSL_FLAG(std::string, server_tls_cert, "",
          "PEM client certificate presented to the server for mutual TLS (default: --tls_cert).");
ABSL_FLAG(std::string, server_tls_key, "", "PEM private key of --server_tls_cert (default: --tls_key).");
ABSL_FLAG(std::string, server_tls_name, "",
          "The name the server's certificate must carry (default: the host of --server; required when "
          "--server lists different hosts).");
ABSL_FLAG(int, split, -1, "Split layer: the device runs layers below it (-1: after the last early exit).");
ABSL_FLAG(std::string, encoding, "fp32", "Wire encoding of the split tensor: fp32, fp16 or int8.");
ABSL_FLAG(std::string, compression, "none", "Lossless compression of the split tensor: none or zstd.");
ABSL_FLAG(int, workers, 2, "Requests processed at once.");
ABSL_FLAG(int, queue_capacity, 64, "Requests waiting before RESOURCE_EXHAUSTED (counted as rejected).");
ABSL_FLAG(int, offload_timeout_ms, 1000, "Deadline of each offload RPC; past it the device finishes locally.");
ABSL_FLAG(int, probe_interval_ms, 500,
          "How often an unreachable server is probed (and a busy one's load refreshed).");
ABSL_FLAG(bool, server_aware, true,
          "Server-aware offloading: finish a request locally when the server's reported and measured load say "
          "its answer would not come within the request's budget (false: offload whenever the server is up).");
ABSL_FLAG(int, server_load_refresh_ms, 50,
          "Server-aware offloading: while declining a busy server, how often its load is asked for.");
ABSL_FLAG(double, server_headroom, 0.8,
          "Server-aware offloading: offload when the expected round trip is at most this share of the budget.");
ABSL_FLAG(double, server_local_factor, 1.0,
          "Server-aware offloading: while the server's queue holds requests, offload only when its expected "
          "answer comes within this factor of the time the device takes to finish the request itself "
          "(0: no such comparison).");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9092",
          "Prometheus /metrics address (port 0 picks one; empty disables).");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads (0 = all cores).");
ABSL_FLAG(int, max_message_bytes, 16 << 20, "Largest gRPC message accepted or sent.");
ABSL_FLAG(int64_t, max_image_bytes, 16 << 20, "Largest encoded image accepted.");
ABSL_FLAG(int64_t, max_image_pixels, 16 << 20, "Largest decoded image (width x height) accepted.");
ABSL_FLAG(std::string, source, "", "Local source: folder:PATH, video:PATH or camera:INDEX.");
ABSL_FLAG(std::string, source_output, "-", "Where the local source's JSON lines go ('-' = stdout).");
ABSL_FLAG(int64_t, source_max, 0, "Stop the local source after this many items (0 = at its end).");
ABSL_FLAG(double, drain_timeout_s, 10, "On SIGTERM, how long queued and in-flight requests may take.");
ABSL_FLAG(std::string, ready_file, "",
          "Write {\"grpc_port\", \"metrics_port\", \"pid\"} here once serving (for scripts and tests).");

ABSL_FLAG(std::string, device_profile, "",
          "This device's profile_summary.json (eenn-profile): turns on live split planning.");
ABSL_FLAG(std::string, server_profile, "", "The server's profile_summary.json (default: --device_profile).");
ABSL_FLAG(std::string, plan_objective, "latency", "Live planner objective: latency, bytes or device_compute.");
ABSL_FLAG(double, plan_latency_bound_ms, std::numeric_limits<double>::infinity(),
          "Latency bound of the bytes and device_compute objectives.");
ABSL_FLAG(int, plan_interval_ms, 500, "Live planner: probe and re-plan period.");
ABSL_FLAG(double, plan_half_life_s, 2.0, "Live planner: half-life of the link and server estimates.");
ABSL_FLAG(double, plan_min_gain_ms, 0.2, "Live planner: move only for at least this expected gain (ms)...");
ABSL_FLAG(double, plan_min_gain_ratio, 0.05, "... and at least this share of the current expected latency.");
ABSL_FLAG(int, plan_dwell_ms, 1000, "Live planner: least time between two moves.");

ABSL_FLAG(double, loss_target, 0,
          "Load-aware exits: keep the predicted loss ratio (requests refused for a full queue) under this by "
          "switching exit configurations (split and thresholds) as the load changes; 0 = off (the bundle's "
          "thresholds at --split).");
ABSL_FLAG(std::string, configs, "",
          "Load-aware exits: the configurations (eenn-calibrate --configs; default: configs.json in the bundle).");
ABSL_FLAG(int, control_interval_ms, 250, "Load-aware exits: decision period.");
ABSL_FLAG(int, control_dwell_ms, 3000,
          "Load-aware exits: a more accurate configuration must qualify this long before the move back.");
ABSL_FLAG(double, control_rate_half_life_s, 2.0,
          "Load-aware exits: half-life of the smoothed arrival rate (the eenn_device_arrival_rate metric).");
ABSL_FLAG(int, control_burst_window_ms, 250,
          "Load-aware exits: the recent arrival rate, which a burst shows in at once, is measured over this.");
ABSL_FLAG(int, control_drain_ms, 1000,
          "Load-aware exits: a backlog above the high-water mark is to be drained within this.");
ABSL_FLAG(double, control_pressure_margin, 0.1,
          "Load-aware exits: with the queue at the high-water mark, decide for at least the capacity of the "
          "configuration in use times 1 + this (0: off), and decide at once rather than at the next interval.");
ABSL_FLAG(int, control_pressure_settle_ms, 500,
          "Load-aware exits: the queue at the high-water mark judges a configuration only once it has been there "
          "at every decision, and the configuration in use, for this long.");
ABSL_FLAG(int, control_rate_window_ms, 1000,
          "Load-aware exits: the long window of the arrival rate (steadier than the burst window).");
ABSL_FLAG(double, control_rate_z, 1.0,
          "Load-aware exits: rate bounds of n -/+ z sqrt(n) arrivals in a window; down moves take the lower bound, "
          "up moves the upper one (0: point estimates).");
ABSL_FLAG(double, control_busy_z, 0.5,
          "Load-aware exits: the busy stretch's rate bound: n - z sqrt(n) arrivals over its span.");
ABSL_FLAG(double, control_up_loss_margin, 0.8,
          "Load-aware exits: up only to a configuration predicted to lose under the target times this ...");
ABSL_FLAG(double, control_up_rate_margin, 0.05, "... at the upper rate bound times (1 + this).");
ABSL_FLAG(bool, control_arrival_work, false,
          "Load control: model the arrivals' own work on the worker's core (one worker, --threads 1): each "
          "arrival during a service takes the measured work from it, so a burst slows the service that absorbs "
          "it (common/queueing.h). Off: the measured service times as they are.");
ABSL_FLAG(bool, control_busy_rate, true,
          "Load-aware exits: with the queue at the high-water mark, the rate of the arrivals since one last found "
          "no request waiting also counts (a burst shows in it from its first arrival on).");
ABSL_FLAG(double, control_high_water, 0.75,
          "Load-aware exits: the queue's high-water mark, as a share of its capacity (0, 1]: at or above it the "
          "busy stretch's rate counts, the backlog beyond it counts as extra load and (with "
          "--control_pressure_margin > 0) an arrival brings the decision forward.");

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "eenn-device: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  eenn::common::BlockTerminationSignals();
  eenn::common::ParseFlags(argc, argv,
      "eenn-device --bundle DIR [--server HOST:PORT] [--listen HOST:PORT] [options]");
  const std::string bundle = absl::GetFlag(FLAGS_bundle);
  if (bundle.empty()) return Fail(absl::InvalidArgumentError("--bundle is required"));
  if (absl::GetFlag(FLAGS_listen).empty() && absl::GetFlag(FLAGS_source).empty()) {
    return Fail(absl::InvalidArgumentError("nothing to serve: give --listen, --source or both"));
  }
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) return Fail(s);

  eenn::device::EdgeEngineOptions opts;
  opts.split_layer = absl::GetFlag(FLAGS_split);
  auto enc = eenn::common::ParseEncoding(absl::GetFlag(FLAGS_encoding));
  if (!enc.ok()) return Fail(enc.status());
  auto comp = eenn::common::ParseCompression(absl::GetFlag(FLAGS_compression));
  if (!comp.ok()) return Fail(comp.status());
  opts.wire.encoding = *enc;
  opts.wire.compression = *comp;
  opts.workers = absl::GetFlag(FLAGS_workers);
  opts.queue_capacity = absl::GetFlag(FLAGS_queue_capacity);
  opts.offload_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_offload_timeout_ms));
  if (opts.offload_timeout <= absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--offload_timeout_ms must be > 0"));
  }
  opts.probe_interval = absl::Milliseconds(absl::GetFlag(FLAGS_probe_interval_ms));
  if (opts.probe_interval <= absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--probe_interval_ms must be > 0"));
  }
  opts.server_load.enabled = absl::GetFlag(FLAGS_server_aware);
  opts.server_load.headroom = absl::GetFlag(FLAGS_server_headroom);
  opts.server_load.local_factor = absl::GetFlag(FLAGS_server_local_factor);
  if (!(opts.server_load.local_factor >= 0)) {
    return Fail(absl::InvalidArgumentError("--server_local_factor must be >= 0"));
  }
  opts.server_load.refresh_interval = absl::Milliseconds(absl::GetFlag(FLAGS_server_load_refresh_ms));
  if (opts.server_load.refresh_interval <= absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--server_load_refresh_ms must be > 0"));
  }
  if (!(opts.server_load.headroom > 0)) {
    return Fail(absl::InvalidArgumentError("--server_headroom must be > 0"));
  }
  opts.decode_limits.max_bytes = absl::GetFlag(FLAGS_max_image_bytes);
  opts.decode_limits.max_pixels = absl::GetFlag(FLAGS_max_image_pixels);

  const bool load_control_on = absl::GetFlag(FLAGS_loss_target) > 0;
  if (load_control_on && !absl::GetFlag(FLAGS_device_profile).empty()) {
    return Fail(absl::InvalidArgumentError(
        "--loss_target and --device_profile both move the split: choose load-aware exits or live split planning"));
  }
  if (load_control_on && absl::GetFlag(FLAGS_split) >= 0) {
    return Fail(absl::InvalidArgumentError("--loss_target takes the split from its configurations: drop --split"));
  }
  // Load-aware exits: the engine reports arrivals and services to the controller, created below.
  std::atomic<eenn::device::LoadControl*> control_ptr{nullptr};
  if (load_control_on) {
    opts.on_arrival = [&control_ptr] {
      if (auto* c = control_ptr.load()) c->OnArrival();
    };
    opts.on_service = [&control_ptr](const eenn::device::ServiceSample& s) {
      if (auto* c = control_ptr.load()) c->OnService(s);
    };
  }

  // Live planning: the engine reports offloads to the planner, created below.
  std::atomic<eenn::device::SplitPlanner*> planner_ptr{nullptr};
  opts.on_offload = [&planner_ptr](const eenn::device::OffloadObservation& o) {
    if (auto* p = planner_ptr.load()) p->OnOffload(o);
  };

  auto manifest = eenn::common::ReadManifest(bundle);
  if (!manifest.ok()) return Fail(manifest.status());
  auto registry = std::make_shared<prometheus::Registry>();
  eenn::device::DeviceMetrics metrics(*registry, manifest->model_name, manifest->model_version,
                                      manifest->spec.exit_layers);

  const eenn::common::TlsOptions tls = eenn::common::TlsFromFlags();
  std::unique_ptr<eenn::device::OffloadClient> client;
  if (!absl::GetFlag(FLAGS_server).empty()) {
    eenn::device::GrpcOffloadClientOptions co;
    co.target = absl::GetFlag(FLAGS_server);
    co.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
    co.max_attempts = absl::GetFlag(FLAGS_server_attempts);
    const eenn::common::TlsOptions& own = tls;
    co.tls.plaintext = absl::GetFlag(FLAGS_server_plaintext);
    if (!co.tls.plaintext) {
      auto pick = [](const std::string& specific, const std::string& shared) {
        return specific.empty() ? shared : specific;
      };
      co.tls.ca = pick(absl::GetFlag(FLAGS_server_tls_ca), own.ca);
      co.tls.cert = pick(absl::GetFlag(FLAGS_server_tls_cert), own.cert);
      co.tls.key = pick(absl::GetFlag(FLAGS_server_tls_key), own.key);
      co.tls.server_name = absl::GetFlag(FLAGS_server_tls_name);
    }
    auto c = eenn::device::MakeGrpcOffloadClient(co);
    if (!c.ok()) return Fail(c.status());
    client = std::move(*c);
  }
  auto engine = eenn::device::EdgeEngine::Create(bundle, opts, std::move(client), &metrics);
  if (!engine.ok()) return Fail(engine.status());
  const auto& m = (*engine)->model();

  std::unique_ptr<eenn::common::MetricsServer> metrics_server;
  int metrics_port = 0;
  if (!absl::GetFlag(FLAGS_metrics_address).empty()) {
    auto e = eenn::common::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_address), registry);
    if (!e.ok()) return Fail(e.status());
    metrics_server = std::move(*e);
    metrics_port = metrics_server->port();
  }

  std::unique_ptr<eenn::device::SplitPlanner> planner;
  if (!absl::GetFlag(FLAGS_device_profile).empty()) {
    eenn::device::SplitPlannerOptions po;
    auto dp = eenn::common::ReadProfile(absl::GetFlag(FLAGS_device_profile));
    if (!dp.ok()) return Fail(dp.status());
    po.device_profile = *dp;
    if (!absl::GetFlag(FLAGS_server_profile).empty()) {
      auto sp = eenn::common::ReadProfile(absl::GetFlag(FLAGS_server_profile));
      if (!sp.ok()) return Fail(sp.status());
      po.server_profile = *sp;
    } else {
      po.server_profile = *dp;
    }
    auto objective = eenn::common::ParsePlanObjective(absl::GetFlag(FLAGS_plan_objective));
    if (!objective.ok()) return Fail(objective.status());
    po.controller.plan.objective = *objective;
    po.controller.plan.latency_bound_ms = absl::GetFlag(FLAGS_plan_latency_bound_ms);
    po.controller.plan.wire = eenn::common::WireKey(*enc, *comp);
    po.controller.min_gain_ms = absl::GetFlag(FLAGS_plan_min_gain_ms);
    po.controller.min_gain_ratio = absl::GetFlag(FLAGS_plan_min_gain_ratio);
    po.controller.min_dwell_s = absl::GetFlag(FLAGS_plan_dwell_ms) / 1000.0;
    po.estimator.half_life_s = absl::GetFlag(FLAGS_plan_half_life_s);
    po.interval = po.probe_interval = absl::Milliseconds(absl::GetFlag(FLAGS_plan_interval_ms));
    auto p = eenn::device::SplitPlanner::Create(engine->get(), &metrics, std::move(po));
    if (!p.ok()) return Fail(p.status());
    planner = std::move(*p);
    planner_ptr = planner.get();
    planner->Start();
  }

  std::unique_ptr<eenn::device::LoadControl> control;
  if (load_control_on) {
    const std::string path =
        absl::GetFlag(FLAGS_configs).empty() ? bundle + "/configs.json" : absl::GetFlag(FLAGS_configs);
    auto set = eenn::common::ReadConfigSet(path, m.name, m.version, manifest->weights_sha256, m.exit_layers);
    if (!set.ok()) return Fail(set.status());
    eenn::device::LoadControlOptions lo;
    lo.controller.loss_target = absl::GetFlag(FLAGS_loss_target);
    lo.controller.workers = opts.workers;
    lo.controller.queue_capacity = opts.queue_capacity;
    lo.controller.dwell_s = absl::GetFlag(FLAGS_control_dwell_ms) / 1000.0;
    lo.controller.rate_half_life_s = absl::GetFlag(FLAGS_control_rate_half_life_s);
    lo.controller.high_water = absl::GetFlag(FLAGS_control_high_water);
    lo.controller.burst_window_s = absl::GetFlag(FLAGS_control_burst_window_ms) / 1000.0;
    lo.controller.drain_s = absl::GetFlag(FLAGS_control_drain_ms) / 1000.0;
    lo.controller.pressure_margin = absl::GetFlag(FLAGS_control_pressure_margin);
    lo.controller.pressure_settle_s = absl::GetFlag(FLAGS_control_pressure_settle_ms) / 1000.0;
    lo.controller.rate_window_s = absl::GetFlag(FLAGS_control_rate_window_ms) / 1000.0;
    lo.controller.rate_z = absl::GetFlag(FLAGS_control_rate_z);
    lo.controller.busy_z = absl::GetFlag(FLAGS_control_busy_z);
    lo.controller.up_loss_margin = absl::GetFlag(FLAGS_control_up_loss_margin);
    lo.controller.up_rate_margin = absl::GetFlag(FLAGS_control_up_rate_margin);
    lo.controller.arrival_work = absl::GetFlag(FLAGS_control_arrival_work);
    lo.busy_rate = absl::GetFlag(FLAGS_control_busy_rate);
    lo.interval = absl::Milliseconds(absl::GetFlag(FLAGS_control_interval_ms));
    auto c = eenn::device::LoadControl::Create(engine->get(), &metrics, std::move(*set), lo);
    if (!c.ok()) return Fail(c.status());
    control = std::move(*c);
    control_ptr = control.get();
    control->Start();
  }

  eenn::device::EdgeServiceImpl service(engine->get(), &metrics);
  std::unique_ptr<eenn::device::PlannerServiceImpl> planner_service;
  if (planner || control) {
    planner_service = std::make_unique<eenn::device::PlannerServiceImpl>(planner.get(), control.get());
  }
  std::unique_ptr<grpc::Server> server;
  int grpc_port = 0;
  if (!absl::GetFlag(FLAGS_listen).empty()) {
    auto credentials = eenn::common::MakeServerCredentials(tls);
    if (!credentials.ok()) return Fail(credentials.status());
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::GetFlag(FLAGS_listen), *credentials, &grpc_port);
    builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
    builder.SetMaxSendMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
    builder.RegisterService(&service);
    if (planner_service) builder.RegisterService(planner_service.get());
    server = builder.BuildAndStart();
    if (!server || grpc_port == 0) {
      return Fail(absl::UnavailableError(absl::StrCat("cannot serve gRPC on '", absl::GetFlag(FLAGS_listen), "'")));
    }
    server->GetHealthCheckService()->SetServingStatus(true);
  }
  std::printf("eenn-device: serving model '%s' version '%s' (%s, split %d of %d layers, %s%s) on port %d (%s), "
              "metrics on port %d\n",
              m.name.c_str(), m.version.c_str(), m.architecture.c_str(), (*engine)->split_layer(), m.num_layers,
              absl::GetFlag(FLAGS_encoding).c_str(),
              absl::GetFlag(FLAGS_compression) == "none" ? "" : ("+" + absl::GetFlag(FLAGS_compression)).c_str(),
              grpc_port, eenn::common::DescribeServer(tls).c_str(), metrics_port);
  std::fflush(stdout);
  if (!absl::GetFlag(FLAGS_ready_file).empty()) {
    auto s = eenn::common::WriteReadyFile(absl::GetFlag(FLAGS_ready_file), grpc_port, metrics_port);
    if (!s.ok()) return Fail(s);
  }

  std::atomic<bool> stop_source{false};
  std::thread source_thread;
  if (!absl::GetFlag(FLAGS_source).empty()) {
    source_thread = std::thread([&] {
      std::ofstream file;
      std::ostream* out = &std::cout;
      if (absl::GetFlag(FLAGS_source_output) != "-") {
        file.open(absl::GetFlag(FLAGS_source_output));
        out = &file;
      }
      auto r = eenn::device::RunSource({absl::GetFlag(FLAGS_source), absl::GetFlag(FLAGS_source_max)},
                                       engine->get(), *out, stop_source);
      if (!r.ok()) {
        std::fprintf(stderr, "eenn-device: source: %s\n", r.status().ToString().c_str());
      } else {
        std::fprintf(stderr, "eenn-device: source done: %lld items, %lld answered, %lld failed\n",
                     static_cast<long long>(r->items), static_cast<long long>(r->answered),
                     static_cast<long long>(r->failed));
      }
      // Without gRPC the daemon has nothing left to do: ask main to stop.
      if (!server) kill(getpid(), SIGTERM);
    });
  }

  const int sig = eenn::common::WaitForTerminationSignal();
  std::printf("eenn-device: signal %d, draining\n", sig);
  std::fflush(stdout);
  stop_source = true;
  const absl::Duration drain = absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s));
  if (server) server->GetHealthCheckService()->SetServingStatus(false);
  if (planner) {
    planner->Stop();  // no more split moves while draining
    planner_ptr = nullptr;
  }
  if (control) {
    control->Stop();
    control_ptr = nullptr;
  }
  (*engine)->StopAccepting();
  // The engine drains alongside gRPC: the server's Shutdown returns only when
  // every call has its answer, and what the engine has not run within `drain`
  // it refuses (UNAVAILABLE), so the whole stop takes about `drain`.
  std::thread engine_drain([&] { (*engine)->Shutdown(drain); });
  if (server) server->Shutdown(absl::ToChronoTime(absl::Now() + drain));
  if (source_thread.joinable()) source_thread.join();
  engine_drain.join();
  std::printf("eenn-device: stopped\n");
  return 0;
}
