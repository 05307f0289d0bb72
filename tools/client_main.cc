// eenn-client: classifies image files or class folders through an eenn-device
// daemon, with a chosen concurrency, and prints a summary (accuracy when the
// parent folder names are class names, latency percentiles, where requests
// were decided, exit histogram, bytes per offload, rejections and failures).
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/image.h"
#include "common/profile.h"
#include "common/tls_flags.h"
#include "proto/eenn.grpc.pb.h"
#include "proto/wire.h"

ABSL_FLAG(std::string, device, "localhost:50052", "eenn-device address.");
ABSL_FLAG(int, concurrency, 4, "Requests in flight at once.");
ABSL_FLAG(int, deadline_ms, 30000, "Deadline of each request.");
ABSL_FLAG(int, split, -1, "Pin this split layer for every request (-1: the device's own).");
ABSL_FLAG(int64_t, limit, 0, "Classify at most this many files (0 = all).");
ABSL_FLAG(bool, json, false, "Print the summary as one JSON object.");
ABSL_FLAG(std::string, results, "", "Write one JSON line per request to this file.");
ABSL_FLAG(bool, quiet, false, "No progress line.");
ABSL_FLAG(double, duration_s, 0,
          "Load mode: cycle through the files for this long (0 = classify each file once).");
ABSL_FLAG(int, watch_pid, 0,
          "Sample this process's resident memory once a second (e.g. the eenn-device's PID) and report "
          "its growth after the warm-up.");
ABSL_FLAG(double, warmup_s, -1, "Load mode: the warm-up that memory growth is measured from (-1: 20% of the run).");

namespace {

namespace fs = std::filesystem;
using eenn::v1::ClassifyReply;

struct Outcome {
  size_t file = 0;  // index into the file list
  bool done = false;
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error;
  ClassifyReply reply;
  double latency_ms = 0;
};

// Resident set size of `pid` in KiB from /proc (0 when it cannot be read).
int64_t RssKib(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return 0;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "eenn-client: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("eenn-client [--device HOST:PORT] [options] FILE_OR_FOLDER...");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> inputs(args.begin() + 1, args.end());
  if (inputs.empty()) return Fail("give image files or folders to classify");
  auto files = eenn::common::ListImageFiles(inputs);
  if (!files.ok()) return Fail(files.status().ToString());
  if (absl::GetFlag(FLAGS_limit) > 0 && static_cast<int64_t>(files->size()) > absl::GetFlag(FLAGS_limit)) {
    files->resize(static_cast<size_t>(absl::GetFlag(FLAGS_limit)));
  }

  grpc::ChannelArguments chargs;
  chargs.SetMaxReceiveMessageSize(64 << 20);
  chargs.SetMaxSendMessageSize(64 << 20);
  auto credentials = eenn::common::MakeChannelCredentials(eenn::common::TlsFromFlags(), &chargs);
  if (!credentials.ok()) return Fail(credentials.status().ToString());
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_device), *credentials, chargs);
  auto stub = eenn::v1::EdgeService::NewStub(channel);
  eenn::v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status s = stub->GetModelInfo(&ctx, eenn::v1::ModelInfoRequest(), &info);
    if (!s.ok()) {
      return Fail(absl::StrCat("cannot reach eenn-device at ", absl::GetFlag(FLAGS_device), ": ",
                               eenn::wire::CodeName(static_cast<absl::StatusCode>(s.error_code())), ": ",
                               s.error_message()));
    }
  }
  // Round trip of a small RPC to the device (median of a few), reported so a
  // planner's RTT input can be checked against the same link.
  std::vector<double> pings;
  for (int i = 0; i < 11; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    eenn::v1::ModelInfo ignored;
    const absl::Time t0 = absl::Now();
    if (stub->GetModelInfo(&ctx, eenn::v1::ModelInfoRequest(), &ignored).ok()) {
      pings.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    }
  }
  std::map<std::string, int64_t> class_index;
  for (int i = 0; i < info.class_names_size(); ++i) class_index[info.class_names(i)] = i;

  const size_t num_files = files->size();
  const double duration_s = absl::GetFlag(FLAGS_duration_s);
  const bool load_mode = duration_s > 0;
  const int concurrency = std::max(1, absl::GetFlag(FLAGS_concurrency));
  // Once through the files: one slot each. Load mode: each caller appends its
  // own outcomes, merged at the end.
  std::vector<Outcome> outcomes(load_mode ? 0 : num_files);
  std::vector<std::vector<Outcome>> per_caller(load_mode ? concurrency : 0);
  std::atomic<size_t> next{0}, finished{0};
  const absl::Time start = absl::Now();
  const absl::Time stop_at = start + absl::Seconds(duration_s);
  auto run_one = [&](size_t i, Outcome& o) {
    o.file = i % num_files;
    eenn::v1::ClassifyRequest req;
    req.set_request_id(absl::StrCat((*files)[o.file], load_mode ? absl::StrCat("#", i) : ""));
    std::ifstream in((*files)[o.file], std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    req.set_image(std::move(bytes));
    if (absl::GetFlag(FLAGS_split) >= 0) req.set_split_layer(absl::GetFlag(FLAGS_split));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(absl::GetFlag(FLAGS_deadline_ms)));
    const absl::Time t0 = absl::Now();
    grpc::Status s = stub->Classify(&ctx, req, &o.reply);
    o.latency_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    o.done = true;
    o.code = s.error_code();
    o.error = s.error_message();
    ++finished;
  };
  auto worker = [&](int caller) {
    if (load_mode) {
      while (absl::Now() < stop_at) {
        per_caller[caller].emplace_back();
        run_one(next++, per_caller[caller].back());
      }
    } else {
      for (size_t i = next++; i < num_files; i = next++) run_one(i, outcomes[i]);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) threads.emplace_back(worker, t);
  // Memory of the watched process, sampled once a second.
  const int watch_pid = absl::GetFlag(FLAGS_watch_pid);
  std::vector<std::pair<double, int64_t>> rss;  // (seconds since start, KiB)
  const bool progress = !absl::GetFlag(FLAGS_quiet) && isatty(2);
  absl::Time next_sample = start;
  while (load_mode ? absl::Now() < stop_at : finished.load() < num_files) {
    absl::SleepFor(absl::Milliseconds(100));
    const absl::Time now = absl::Now();
    const double el = absl::ToDoubleSeconds(now - start);
    if (watch_pid > 0 && now >= next_sample) {
      rss.emplace_back(el, RssKib(watch_pid));
      next_sample += absl::Seconds(1);
    }
    if (progress && static_cast<int64_t>(el * 10) % 5 == 0) {
      std::fprintf(stderr, "\r%zu%s requests, %.1f req/s   ", finished.load(),
                   load_mode ? "" : absl::StrCat("/", num_files).c_str(), finished.load() / std::max(el, 1e-9));
    }
  }
  for (auto& t : threads) t.join();
  const double wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  if (watch_pid > 0) rss.emplace_back(wall_s, RssKib(watch_pid));
  if (progress) std::fprintf(stderr, "\n");
  if (load_mode) {
    for (auto& v : per_caller) {
      for (auto& o : v) outcomes.push_back(std::move(o));
    }
  }
  const size_t n = outcomes.size();

  // Summary.
  std::ofstream results;
  if (!absl::GetFlag(FLAGS_results).empty()) results.open(absl::GetFlag(FLAGS_results));
  int64_t answered = 0, rejected = 0, failed = 0, labelled = 0, correct = 0, offloaded = 0, offload_bytes = 0;
  std::map<std::string, int64_t> decided{{"device", 0}, {"server", 0}, {"fallback", 0}};
  std::map<int, int64_t> exits;
  std::map<std::string, int64_t> errors;
  std::vector<double> lat, service;
  int64_t lost = 0;
  for (size_t i = 0; i < n; ++i) {
    const Outcome& o = outcomes[i];
    const std::string& file = (*files)[o.file];
    nlohmann::json line = {{"file", file}};
    if (!o.done) {
      ++lost;
      continue;
    }
    if (o.code != grpc::StatusCode::OK) {
      const std::string code = eenn::wire::CodeName(static_cast<absl::StatusCode>(o.code));
      ++errors[code];
      // RESOURCE_EXHAUSTED: refused explicitly (full queue). DEADLINE_EXCEEDED:
      // no answer came in time, the request is lost to the caller. Anything
      // else is an explicit failure with its reason.
      if (o.code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        ++rejected;
      } else if (o.code == grpc::StatusCode::DEADLINE_EXCEEDED) {
        ++lost;
      } else {
        ++failed;
      }
      line["error"] = code + ": " + o.error;
      if (results.is_open()) results << line.dump() << "\n";
      continue;
    }
    ++answered;
    lat.push_back(o.latency_ms);
    // The device's own receipt-to-reply time less its input-queue wait: what
    // the split planner predicts (no client hop, no queueing).
    service.push_back((o.reply.timings().total_us() - o.reply.timings().queue_us()) / 1000.0);
    const char* where = o.reply.decided() == eenn::v1::DECISION_DEVICE   ? "device"
                        : o.reply.decided() == eenn::v1::DECISION_SERVER ? "server"
                                                                         : "fallback";
    ++decided[where];
    ++exits[o.reply.exit_layer()];
    if (o.reply.offload_bytes() > 0) {
      ++offloaded;
      offload_bytes += o.reply.offload_bytes();
    }
    const std::string label = fs::path(file).parent_path().filename().string();
    auto it = class_index.find(label);
    if (it != class_index.end()) {
      ++labelled;
      correct += o.reply.class_id() == it->second;
    }
    line["class"] = o.reply.class_id();
    line["class_name"] = o.reply.class_name();
    line["confidence"] = o.reply.confidence();
    line["exit_layer"] = o.reply.exit_layer();
    line["decided"] = where;
    line["latency_ms"] = o.latency_ms;
    line["offload_bytes"] = o.reply.offload_bytes();
    if (!o.reply.fallback_reason().empty()) line["fallback_reason"] = o.reply.fallback_reason();
    if (results.is_open()) results << line.dump() << "\n";
  }
  const eenn::common::TimeStats lat_ms = eenn::common::ComputeTimeStats(lat);
  double p999 = 0;  // nearest rank
  if (!lat.empty()) {
    std::vector<double> sorted = lat;
    std::sort(sorted.begin(), sorted.end());
    p999 = sorted[std::min(sorted.size() - 1, static_cast<size_t>(std::ceil(0.999 * sorted.size())) - 1)];
  }
  const eenn::common::TimeStats service_ms = eenn::common::ComputeTimeStats(service);
  nlohmann::json summary = {
      {"device", absl::GetFlag(FLAGS_device)},
      {"model", info.model_name()},
      {"version", info.model_version()},
      {"split_layer", absl::GetFlag(FLAGS_split) >= 0 ? absl::GetFlag(FLAGS_split) : info.split_layer()},
      {"requests", n},
      {"answered", answered},
      {"rejected", rejected},
      {"failed", failed},
      {"lost", lost},
      {"loss_ratio", n > 0 ? static_cast<double>(rejected + lost) / n : 0.0},
      {"accuracy", labelled > 0 ? nlohmann::json(static_cast<double>(correct) / labelled) : nlohmann::json(nullptr)},
      {"labelled", labelled},
      {"latency_ms",
       {{"mean", lat_ms.mean}, {"p50", lat_ms.p50}, {"p90", lat_ms.p90}, {"p99", lat_ms.p99},
        {"p999", p999}, {"max", lat_ms.max}}},
      {"rtt_ms", eenn::common::ComputeTimeStats(pings).p50},
      {"device_service_ms",
       {{"mean", service_ms.mean}, {"p50", service_ms.p50}, {"p90", service_ms.p90}}},
      {"decided", decided},
      {"bytes_per_offload", offloaded > 0 ? static_cast<double>(offload_bytes) / offloaded : 0.0},
      {"offloaded", offloaded},
      {"errors", errors},
      {"wall_s", wall_s},
      {"throughput_rps", n / std::max(wall_s, 1e-9)},
      {"concurrency", concurrency}};
  nlohmann::json hist = nlohmann::json::object();
  for (const auto& [layer, count] : exits) hist[std::to_string(layer)] = count;
  summary["exit_histogram"] = hist;
  if (watch_pid > 0 && !rss.empty()) {
    // Growth from the end of the warm-up to the end of the run.
    const double warmup = absl::GetFlag(FLAGS_warmup_s) >= 0 ? absl::GetFlag(FLAGS_warmup_s) : 0.2 * wall_s;
    int64_t base = rss.front().second;
    for (const auto& [t, kib] : rss) {
      if (t <= warmup) base = kib;
    }
    int64_t peak = 0;
    for (const auto& [t, kib] : rss) peak = std::max(peak, kib);
    const int64_t last = rss.back().second;
    summary["rss_kib"] = {{"pid", watch_pid},       {"after_warmup", base}, {"end", last}, {"peak", peak},
                          {"warmup_s", warmup},    {"samples", rss.size()},
                          {"growth", base > 0 ? static_cast<double>(last - base) / base : 0.0}};
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", summary.dump().c_str());
    return failed > 0 ? 2 : 0;
  }
  std::printf("eenn-client: %zu requests to %s (model '%s' version '%s', split %d), concurrency %d, %.1f s\n", n,
              absl::GetFlag(FLAGS_device).c_str(), info.model_name().c_str(), info.model_version().c_str(),
              summary["split_layer"].get<int>(), concurrency, wall_s);
  std::printf("  answered %lld, rejected %lld, failed %lld, lost %lld; throughput %.1f req/s\n",
              static_cast<long long>(answered), static_cast<long long>(rejected), static_cast<long long>(failed),
              static_cast<long long>(lost), n / std::max(wall_s, 1e-9));
  if (labelled > 0) {
    std::printf("  accuracy %.2f%% (%lld of %lld labelled by folder name)\n", 100.0 * correct / labelled,
                static_cast<long long>(correct), static_cast<long long>(labelled));
  }
  std::printf("  latency ms: mean %.2f, p50 %.2f, p90 %.2f, p99 %.2f, p99.9 %.2f, max %.2f\n", lat_ms.mean,
              lat_ms.p50, lat_ms.p90, lat_ms.p99, p999, lat_ms.max);
  std::printf("  decided: device %lld, server %lld, fallback %lld\n", static_cast<long long>(decided["device"]),
              static_cast<long long>(decided["server"]), static_cast<long long>(decided["fallback"]));
  std::string h;
  for (const auto& [layer, count] : exits) absl::StrAppend(&h, h.empty() ? "" : ", ", layer, ": ", count);
  std::printf("  exit layers: {%s}\n", h.c_str());
  std::printf("  bytes per offload: %.0f (%lld offloads)\n", offloaded > 0 ? double(offload_bytes) / offloaded : 0.0,
              static_cast<long long>(offloaded));
  for (const auto& [code, count] : errors) std::printf("  error %s: %lld\n", code.c_str(), static_cast<long long>(count));
  if (summary.contains("rss_kib")) {
    const auto& r = summary["rss_kib"];
    std::printf("  resident memory of pid %d: %lld KiB after %.0f s warm-up, %lld KiB at the end (%+.2f%%), peak %lld\n",
                watch_pid, static_cast<long long>(r["after_warmup"].get<int64_t>()), r["warmup_s"].get<double>(),
                static_cast<long long>(r["end"].get<int64_t>()), 100 * r["growth"].get<double>(),
                static_cast<long long>(r["peak"].get<int64_t>()));
  }
  return failed > 0 ? 2 : 0;
}
