// eenn-plan: where to split an early-exit network between a device and a
// server, from the two machines' profiles (eenn-profile's
// profile_summary.json), for one or more link bandwidths.
//
//   eenn-plan --device_profile pi/profile_summary.json
//     --server_profile gpu/profile_summary.json --bandwidth_mbps 10,100
//     --wire int8+zstd [--json] [--svg plan.svg]
//
// Prints, per bandwidth, every split's expected latency and its parts, the
// bytes sent per sample and the share offloaded, with the best split marked.
// --json prints PlanToJson's object (several bandwidths: {"plans": [...]}).
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "common/daemon.h"
#include "common/planner.h"
#include "common/profile.h"
#include "common/tls_flags.h"
#include "proto/eenn.grpc.pb.h"
#include "proto/wire.h"

ABSL_FLAG(std::string, device_profile, "", "The device's profile_summary.json (required).");
ABSL_FLAG(std::string, server_profile, "",
          "The server's profile_summary.json (default: the device profile).");
ABSL_FLAG(std::string, bandwidth_mbps, "100", "Comma-separated link bandwidths in Mbit/s.");
ABSL_FLAG(double, rtt_ms, 1, "Round trip of a request without payload, ms.");
ABSL_FLAG(double, overhead_bytes, 300, "Framing bytes per offload (protobuf, gRPC, HTTP/2).");
ABSL_FLAG(std::string, wire, "fp32", "Wire format of the offloaded tensor (e.g. fp16, int8+zstd).");
ABSL_FLAG(std::string, objective, "latency", "latency, bytes or device_compute.");
ABSL_FLAG(double, latency_bound_ms, std::numeric_limits<double>::infinity(),
          "Expected-latency bound for the bytes and device_compute objectives.");
ABSL_FLAG(std::string, exit_shares, "",
          "Comma-separated per-exit leave probabilities, final exit included "
          "(default: the device profile's).");
ABSL_FLAG(bool, no_preprocess, false, "Leave the device's preprocessing time out.");
ABSL_FLAG(bool, json, false, "Print JSON instead of tables.");
ABSL_FLAG(std::string, svg, "", "Write a latency-per-split chart for --plot_bandwidths here.");
ABSL_FLAG(std::string, plot_bandwidths, "5,10,50,100,1000",
          "Comma-separated bandwidths (Mbit/s) plotted by --svg.");
ABSL_FLAG(std::string, device, "",
          "Ask a running eenn-device (host:port) for its live plan instead of reading profiles.");
ABSL_FLAG(double, what_if_bandwidth_mbps, -1,
          "With --device: the plan at this bandwidth instead of the device's estimate.");
ABSL_FLAG(double, what_if_rtt_ms, -1, "With --device: the plan at this RTT instead of the device's estimate.");
ABSL_FLAG(bool, quiet, false, "Print only the best split per bandwidth.");

namespace {

int Fail(const absl::Status& s) {
  std::cerr << "eenn-plan: " << s << "\n";
  return 2;
}

absl::StatusOr<std::vector<double>> ParseList(const std::string& flag, const std::string& text) {
  std::vector<double> values;
  for (absl::string_view t : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double v;
    if (!absl::SimpleAtod(t, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("bad --", flag, " entry '", t, "'"));
    }
    values.push_back(v);
  }
  return values;
}

// The live plan of a running eenn-device.
int QueryDevice(const std::string& target) {
  grpc::ChannelArguments args;
  auto credentials = eenn::common::MakeChannelCredentials(eenn::common::TlsFromFlags(), &args);
  if (!credentials.ok()) return Fail(credentials.status());
  auto channel = grpc::CreateCustomChannel(target, *credentials, args);
  auto stub = eenn::v1::PlannerService::NewStub(channel);
  eenn::v1::PlanRequest req;
  if (absl::GetFlag(FLAGS_what_if_bandwidth_mbps) >= 0) {
    req.set_bandwidth_mbps(absl::GetFlag(FLAGS_what_if_bandwidth_mbps));
  }
  if (absl::GetFlag(FLAGS_what_if_rtt_ms) >= 0) req.set_rtt_ms(absl::GetFlag(FLAGS_what_if_rtt_ms));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  eenn::v1::PlanReply reply;
  grpc::Status st = stub->GetPlan(&ctx, req, &reply);
  if (!st.ok()) {
    const absl::Status s = eenn::wire::FromGrpc(st);
    return Fail(absl::Status(s.code(), absl::StrCat("eenn-device at ", target, " (is live planning on? it needs "
                                                    "--device_profile): ", s.message())));
  }
  eenn::common::Plan plan;
  plan.best_split = reply.best_split();
  auto objective = eenn::common::ParsePlanObjective(reply.objective());
  if (objective.ok()) plan.objective = *objective;
  plan.link.bandwidth_mbps = reply.bandwidth_mbps();
  plan.link.rtt_ms = reply.rtt_ms();
  plan.wire = reply.wire();
  for (const auto& c : reply.candidates()) {
    eenn::common::SplitCandidate x;
    x.split = c.split();
    x.expected_ms = c.expected_ms();
    x.bytes = c.bytes();
    x.offload_share = c.offload_share();
    x.device_ms = c.device_ms();
    x.link_ms = c.link_ms();
    x.server_ms = c.server_ms();
    plan.candidates.push_back(x);
  }
  if (plan.best_split < 0 || plan.best_split >= static_cast<int>(plan.candidates.size())) {
    return Fail(absl::InternalError("eenn-device answered a plan without its best split"));
  }
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j = nlohmann::json::parse(eenn::common::PlanToJson(plan));
    j["current_split"] = reply.current_split();
    j["server_speed_factor"] = reply.server_speed_factor();
    j["server_queue_ms"] = reply.server_queue_ms();
    j["round_trips"] = reply.round_trips();
    j["hypothetical"] = reply.hypothetical();
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::printf("eenn-device at %s: current split %d; %s link %.1f Mbit/s, RTT %.3f ms; server speed x%.2f, "
              "queue %.3f ms (%lld round trips observed)\n\n%s",
              target.c_str(), reply.current_split(), reply.hypothetical() ? "what-if" : "estimated",
              reply.bandwidth_mbps(), reply.rtt_ms(), reply.server_speed_factor(), reply.server_queue_ms(),
              static_cast<long long>(reply.round_trips()), eenn::common::FormatPlanTable(plan).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  eenn::common::ParseFlags(argc, argv,
      "Choose the device/server split of an early-exit network.\n"
      "  eenn-plan --device_profile FILE [--server_profile FILE] [--bandwidth_mbps 10,100]");
  if (!absl::GetFlag(FLAGS_device).empty()) return QueryDevice(absl::GetFlag(FLAGS_device));
  const std::string device_path = absl::GetFlag(FLAGS_device_profile);
  if (device_path.empty()) {
    std::cerr << "usage: eenn-plan --device_profile FILE [--server_profile FILE] "
                 "[--bandwidth_mbps 10,100] [--json]\n";
    return 2;
  }
  auto device = eenn::common::ReadProfile(device_path);
  if (!device.ok()) return Fail(device.status());
  eenn::common::Profile server = *device;
  if (const std::string path = absl::GetFlag(FLAGS_server_profile); !path.empty()) {
    auto read = eenn::common::ReadProfile(path);
    if (!read.ok()) return Fail(read.status());
    server = *std::move(read);
  }

  auto bandwidths = ParseList("bandwidth_mbps", absl::GetFlag(FLAGS_bandwidth_mbps));
  if (!bandwidths.ok()) return Fail(bandwidths.status());
  if (bandwidths->empty()) return Fail(absl::InvalidArgumentError("--bandwidth_mbps is empty"));
  auto objective = eenn::common::ParsePlanObjective(absl::GetFlag(FLAGS_objective));
  if (!objective.ok()) return Fail(objective.status());
  eenn::common::PlanOptions options;
  options.wire = absl::GetFlag(FLAGS_wire);
  options.objective = *objective;
  options.latency_bound_ms = absl::GetFlag(FLAGS_latency_bound_ms);
  options.include_preprocess = !absl::GetFlag(FLAGS_no_preprocess);
  if (const std::string shares = absl::GetFlag(FLAGS_exit_shares); !shares.empty()) {
    auto parsed = ParseList("exit_shares", shares);
    if (!parsed.ok()) return Fail(parsed.status());
    options.exit_shares = *std::move(parsed);
  }
  auto plan_at = [&](double mbps) {
    eenn::common::LinkEstimate link;
    link.bandwidth_mbps = mbps;
    link.rtt_ms = absl::GetFlag(FLAGS_rtt_ms);
    link.overhead_bytes = absl::GetFlag(FLAGS_overhead_bytes);
    return eenn::common::PlanSplits(*device, server, link, options);
  };

  std::vector<eenn::common::Plan> plans;
  for (double mbps : *bandwidths) {
    auto plan = plan_at(mbps);
    if (!plan.ok()) return Fail(plan.status());
    plans.push_back(*std::move(plan));
  }

  if (const std::string svg_path = absl::GetFlag(FLAGS_svg); !svg_path.empty()) {
    auto plot_bandwidths = ParseList("plot_bandwidths", absl::GetFlag(FLAGS_plot_bandwidths));
    if (!plot_bandwidths.ok()) return Fail(plot_bandwidths.status());
    std::vector<std::pair<std::string, eenn::common::Plan>> series;
    for (double mbps : *plot_bandwidths) {
      auto plan = plan_at(mbps);
      if (!plan.ok()) return Fail(plan.status());
      series.emplace_back(absl::StrCat(mbps, " Mbit/s"), *std::move(plan));
    }
    const std::string title =
        absl::StrCat(device->model_name, " ", device->model_version,
                     ": expected latency per split (", device->host, " + ", server.host, ", RTT ",
                     absl::GetFlag(FLAGS_rtt_ms), " ms, wire ", options.wire, ")");
    if (auto s = eenn::common::WriteFileAtomically(svg_path, eenn::common::PlotPlansSvg(series, title));
        !s.ok()) {
      return Fail(s);
    }
    if (!absl::GetFlag(FLAGS_quiet)) std::cerr << "eenn-plan: wrote " << svg_path << "\n";
  }

  if (absl::GetFlag(FLAGS_json)) {
    if (plans.size() == 1) {
      std::cout << eenn::common::PlanToJson(plans[0]) << "\n";
    } else {
      nlohmann::json all = nlohmann::json::array();
      for (const auto& plan : plans)
        all.push_back(nlohmann::json::parse(eenn::common::PlanToJson(plan)));
      std::cout << nlohmann::json{{"plans", all}}.dump() << "\n";
    }
    return 0;
  }
  const std::string objective_name = eenn::common::PlanObjectiveName(options.objective);
  for (size_t k = 0; k < plans.size(); ++k) {
    const eenn::common::Plan& plan = plans[k];
    const std::string heading =
        absl::StrCat("bandwidth ", plan.link.bandwidth_mbps, " Mbit/s, RTT ", plan.link.rtt_ms,
                     " ms, wire ", plan.wire, ", objective ", objective_name);
    if (absl::GetFlag(FLAGS_quiet)) {
      const eenn::common::SplitCandidate& best = plan.best();
      std::printf("%s: best split %d (expected %.3f ms, %.1f bytes/sample)%s\n", heading.c_str(),
                  best.split, best.expected_ms, best.bytes,
                  plan.bound_met ? "" : "; latency bound not met");
      continue;
    }
    if (k == 0) {
      std::printf("model %s %s (%s): device profile from %s, server profile from %s\n",
                  device->model_name.c_str(), device->model_version.c_str(),
                  device->architecture.c_str(), device->host.c_str(), server.host.c_str());
    }
    std::printf("\n%s\n%s", heading.c_str(), eenn::common::FormatPlanTable(plan).c_str());
  }
  return 0;
}
