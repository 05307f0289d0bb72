// eenn-client: classifies image files or class folders through an eenn-device
// daemon, with a chosen concurrency, and prints a summary (accuracy when the
// parent folder names are class names, latency percentiles, where requests
// were decided, exit histogram, bytes per offload, rejections and failures).
//
// Closed loop (default): --concurrency callers, each sending its next request
// when the previous one is answered; once through the files, or cycling them
// for --duration_s. Open loop (--arrivals): requests are sent at the arrival
// times of a Poisson, on/off or replayed process however many are in flight,
// latency is measured from each request's intended arrival time (so a slow
// device cannot hide its queueing by slowing the sender down), and the
// summary adds per-window figures (--window_s, --windows_csv).
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
#include <random>
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
#include "common/cli.h"
#include "common/image.h"
#include "common/profile.h"
#include "common/queueing.h"
#include "common/tls_flags.h"
#include "common/workload.h"
#include "proto/eenn.grpc.pb.h"
#include "proto/wire.h"

ABSL_FLAG(std::string, device, "localhost:50052", "eenn-device address.");
ABSL_FLAG(int, concurrency, 4, "Requests in flight at once.");
ABSL_FLAG(int, deadline_ms, 30000, "Deadline of each request.");
ABSL_FLAG(int, split, -1, "Pin this split layer for every request (-1: the device's own).");
ABSL_FLAG(int64_t, limit, 0, "Classify at most this many files (0 = all).");
ABSL_FLAG(bool, shuffle, false,
          "Send the files in a random order (by --seed) rather than as listed (class folders one after another: "
          "the inputs' difficulty, so the device's service time, then drifts class by class).");
ABSL_FLAG(bool, json, false, "Print the summary as one JSON object.");
ABSL_FLAG(std::string, results, "", "Write one JSON line per request to this file.");
ABSL_FLAG(bool, quiet, false, "No progress line.");
ABSL_FLAG(double, duration_s, 0,
          "Load mode: cycle through the files for this long (0 = classify each file once).");
ABSL_FLAG(int, watch_pid, 0,
          "Sample this process's resident memory once a second (e.g. the eenn-device's PID) and report "
          "its growth after the warm-up.");
ABSL_FLAG(double, warmup_s, -1, "Load mode: the warm-up that memory growth is measured from (-1: 20% of the run).");
ABSL_FLAG(std::string, arrivals, "",
          "Open loop: send requests at the arrival times of a process, however many are in flight. "
          "poisson:RATE (Poisson arrivals, RATE per second); onoff:RATE_ON,RATE_OFF,ON_S,OFF_S (Poisson at "
          "RATE_ON for ON_S seconds then at RATE_OFF for OFF_S seconds, repeated, starting on); "
          "trace:FILE.csv (replay: one arrival time per line in seconds from the start, non-decreasing; "
          "either a single column of numbers or a header line naming a column t or time; empty lines and "
          "lines starting with # are skipped). poisson and onoff need --duration_s; a trace runs to its "
          "last arrival or to --duration_s. Files are sent in turn, cycling. Each request carries "
          "--deadline_ms from its arrival time; an answer after it counts as missed.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the arrival process (open loop) and of --shuffle.");
ABSL_FLAG(double, window_s, 1, "Open loop: length of the report windows (by arrival time), seconds.");
ABSL_FLAG(int, regime_requests, 250,
          "Gaps between answers in windows of this many answers make the service-speed regimes "
          "(answer_gap_ms.regimes_ms: its drift while the device is never idle).");
ABSL_FLAG(std::string, windows_csv, "", "Open loop: write the per-window figures to this CSV file.");

namespace {

namespace fs = std::filesystem;
using eenn::v1::ClassifyReply;

struct Outcome {
  size_t file = 0;  // index into the file list
  double arrival_s = 0;  // open loop: intended arrival time from the start
  double send_lag_ms = 0;  // open loop: how late the scheduler sent it
  bool done = false;
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error;
  ClassifyReply reply;
  double latency_ms = 0;
  double done_s = 0;  // when the answer came, seconds from the start
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
  std::vector<char*> args = eenn::common::ParseFlags(argc, argv,
      "eenn-client [--device HOST:PORT] [options] FILE_OR_FOLDER...\n"
      "  closed loop: --concurrency N [--duration_s S]; open loop: --arrivals poisson:RATE|"
      "onoff:RATE_ON,RATE_OFF,ON_S,OFF_S|trace:FILE.csv [--duration_s S] [--window_s W] [--windows_csv F]");
  std::vector<std::string> inputs(args.begin() + 1, args.end());
  if (inputs.empty()) return Fail("give image files or folders to classify");
  auto files = eenn::common::ListImageFiles(inputs);
  if (!files.ok()) return Fail(files.status().ToString());
  if (absl::GetFlag(FLAGS_shuffle)) {
    std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
    std::shuffle(files->begin(), files->end(), rng);
  }
  if (absl::GetFlag(FLAGS_limit) > 0 && static_cast<int64_t>(files->size()) > absl::GetFlag(FLAGS_limit)) {
    files->resize(static_cast<size_t>(absl::GetFlag(FLAGS_limit)));
  }

  // Open loop: the arrival process, checked before connecting.
  const bool open_loop = !absl::GetFlag(FLAGS_arrivals).empty();
  eenn::common::ArrivalSpec arrival_spec;
  if (open_loop) {
    auto spec = eenn::common::ParseArrivalSpec(absl::GetFlag(FLAGS_arrivals));
    if (!spec.ok()) return Fail(spec.status().ToString());
    arrival_spec = std::move(*spec);
    if (arrival_spec.kind != eenn::common::ArrivalSpec::Kind::kTrace && absl::GetFlag(FLAGS_duration_s) <= 0) {
      return Fail("--arrivals " + arrival_spec.ToString() + " needs --duration_s");
    }
    if (absl::GetFlag(FLAGS_window_s) <= 0) return Fail("--window_s must be > 0");
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
  const int deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  const bool load_mode = duration_s > 0 && !open_loop;
  const int concurrency = std::max(1, absl::GetFlag(FLAGS_concurrency));
  std::vector<double> arrival_times;
  if (open_loop) {
    arrival_times = eenn::common::GenerateArrivals(arrival_spec, duration_s, absl::GetFlag(FLAGS_seed));
  }
  // Open loop: the run's length for the windows (a trace without --duration_s:
  // up to its last arrival).
  const double open_duration_s =
      duration_s > 0 ? duration_s : (arrival_times.empty() ? 0.0 : arrival_times.back());
  // Once through the files: one slot each. Load mode: each caller appends its
  // own outcomes, merged at the end. Open loop: one slot per arrival.
  std::vector<Outcome> outcomes(open_loop ? arrival_times.size() : load_mode ? 0 : num_files);
  std::vector<std::vector<Outcome>> per_caller(load_mode ? concurrency : 0);
  std::vector<std::string> image_bytes;  // open loop: the files, read before the clock starts
  if (open_loop) {
    image_bytes.resize(std::min(num_files, arrival_times.size()));
    for (size_t i = 0; i < image_bytes.size(); ++i) {
      std::ifstream in((*files)[i], std::ios::binary);
      image_bytes[i].assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }
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
    const absl::Time t1 = absl::Now();
    o.latency_ms = absl::ToDoubleMilliseconds(t1 - t0);
    o.done_s = absl::ToDoubleSeconds(t1 - start);
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
  // Open loop: one scheduler thread sends each request at its arrival time
  // through gRPC's callback API (sending never waits for an answer); the
  // callbacks record the outcomes, and finished calls are freed by the main
  // loop below.
  struct Call {
    grpc::ClientContext ctx;
    eenn::v1::ClassifyRequest req;
  };
  std::vector<std::unique_ptr<Call>> calls(open_loop ? arrival_times.size() : 0);
  std::mutex reclaim_mu;
  std::vector<size_t> reclaim;
  std::atomic<int64_t> in_flight{0}, max_in_flight{0};
  std::atomic<bool> scheduled{false};
  double lag_sum_ms = 0, lag_max_ms = 0;  // how late the scheduler sent, written by it only
  auto scheduler = [&]() {
    auto* async = stub->async();
    for (size_t i = 0; i < arrival_times.size(); ++i) {
      const absl::Time target = start + absl::Seconds(arrival_times[i]);
      const absl::Time now = absl::Now();
      if (now < target) absl::SleepFor(target - now);
      const double lag_ms = std::max(0.0, absl::ToDoubleMilliseconds(absl::Now() - target));
      lag_sum_ms += lag_ms;
      lag_max_ms = std::max(lag_max_ms, lag_ms);
      Outcome& o = outcomes[i];
      o.file = i % num_files;
      o.arrival_s = arrival_times[i];
      o.send_lag_ms = lag_ms;
      auto call = std::make_unique<Call>();
      call->req.set_request_id(absl::StrCat((*files)[o.file], "#", i));
      call->req.set_image(image_bytes[o.file]);
      if (absl::GetFlag(FLAGS_split) >= 0) call->req.set_split_layer(absl::GetFlag(FLAGS_split));
      call->ctx.set_deadline(absl::ToChronoTime(target + absl::Milliseconds(deadline_ms)));
      Call* c = call.get();
      {
        std::lock_guard<std::mutex> lock(reclaim_mu);
        calls[i] = std::move(call);
      }
      const int64_t now_in_flight = ++in_flight;
      int64_t seen = max_in_flight.load();
      while (now_in_flight > seen && !max_in_flight.compare_exchange_weak(seen, now_in_flight)) {
      }
      async->Classify(&c->ctx, &c->req, &o.reply, [&, i, target](grpc::Status s) {
        Outcome& out = outcomes[i];
        const absl::Time t1 = absl::Now();
        out.latency_ms = absl::ToDoubleMilliseconds(t1 - target);
        out.done_s = absl::ToDoubleSeconds(t1 - start);
        out.code = s.error_code();
        out.error = s.error_message();
        out.done = true;
        {
          std::lock_guard<std::mutex> lock(reclaim_mu);
          reclaim.push_back(i);
        }
        ++finished;
        --in_flight;
      });
    }
    scheduled = true;
  };
  auto free_finished = [&]() {
    std::vector<size_t> done;
    {
      std::lock_guard<std::mutex> lock(reclaim_mu);
      done.swap(reclaim);
    }
    for (size_t i : done) {
      std::lock_guard<std::mutex> lock(reclaim_mu);
      calls[i].reset();
    }
  };
  auto running = [&]() {
    if (open_loop) return !scheduled.load() || in_flight.load() > 0;
    return load_mode ? absl::Now() < stop_at : finished.load() < num_files;
  };
  std::vector<std::thread> threads;
  if (open_loop) {
    threads.emplace_back(scheduler);
  } else {
    for (int t = 0; t < concurrency; ++t) threads.emplace_back(worker, t);
  }
  // Memory of the watched process, sampled once a second.
  const int watch_pid = absl::GetFlag(FLAGS_watch_pid);
  std::vector<std::pair<double, int64_t>> rss;  // (seconds since start, KiB)
  const bool progress = !absl::GetFlag(FLAGS_quiet) && isatty(2);
  absl::Time next_sample = start;
  while (running()) {
    absl::SleepFor(absl::Milliseconds(100));
    if (open_loop) free_finished();
    const absl::Time now = absl::Now();
    const double el = absl::ToDoubleSeconds(now - start);
    if (watch_pid > 0 && now >= next_sample) {
      rss.emplace_back(el, RssKib(watch_pid));
      next_sample += absl::Seconds(1);
    }
    if (progress && static_cast<int64_t>(el * 10) % 5 == 0) {
      const size_t total = open_loop ? arrival_times.size() : num_files;
      std::fprintf(stderr, "\r%zu%s requests, %.1f req/s   ", finished.load(),
                   load_mode ? "" : absl::StrCat("/", total).c_str(), finished.load() / std::max(el, 1e-9));
    }
  }
  for (auto& t : threads) t.join();
  if (open_loop) free_finished();
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
  std::vector<double> lat, service, answered_at;
  int64_t lost = 0;
  // Open loop: what became of each arrival, for the windows.
  std::vector<eenn::common::RequestRecord> records;
  records.reserve(open_loop ? n : 0);
  for (size_t i = 0; i < n; ++i) {
    const Outcome& o = outcomes[i];
    const std::string& file = (*files)[o.file];
    nlohmann::json line = {{"file", file}};
    eenn::common::RequestRecord rec;
    rec.arrival_s = o.arrival_s;
    rec.latency_ms = o.latency_ms;
    if (open_loop) {
      line["arrival_s"] = o.arrival_s;
      line["send_lag_ms"] = o.send_lag_ms;
    }
    if (!o.done) {
      ++lost;
      rec.outcome = eenn::common::RequestOutcome::kDeadline;
      if (open_loop) records.push_back(rec);
      continue;
    }
    if (o.code != grpc::StatusCode::OK) {
      rec.outcome = o.code == grpc::StatusCode::RESOURCE_EXHAUSTED  ? eenn::common::RequestOutcome::kRejected
                    : o.code == grpc::StatusCode::DEADLINE_EXCEEDED ? eenn::common::RequestOutcome::kDeadline
                                                                    : eenn::common::RequestOutcome::kFailed;
      if (open_loop) records.push_back(rec);
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
    answered_at.push_back(o.done_s);
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
      rec.labelled = true;
      rec.correct = o.reply.class_id() == it->second;
    }
    rec.outcome = eenn::common::RequestOutcome::kAnswered;
    if (open_loop) {
      records.push_back(rec);
      if (o.latency_ms > deadline_ms) line["late"] = true;
    }
    line["class"] = o.reply.class_id();
    line["class_name"] = o.reply.class_name();
    line["confidence"] = o.reply.confidence();
    line["exit_layer"] = o.reply.exit_layer();
    line["decided"] = where;
    line["latency_ms"] = o.latency_ms;
    line["service_ms"] = service.back();
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
  const eenn::common::ServiceMoments service_moments = eenn::common::ComputeServiceMoments(service);
  // Gaps between consecutive answers: while the device is never idle (closed
  // loop with more requests in flight than it has workers), its service
  // process as the callers see it, with everything else that ran on its cores.
  std::sort(answered_at.begin(), answered_at.end());
  std::vector<double> gaps_ms;
  for (size_t i = 1; i < answered_at.size(); ++i) gaps_ms.push_back(1000.0 * (answered_at[i] - answered_at[i - 1]));
  const eenn::common::ServiceMoments gap_moments = eenn::common::ComputeServiceMoments(gaps_ms);
  // The same gaps in windows of --regime_requests consecutive answers: how
  // the service speed drifted during the run (with the inputs' difficulty, or
  // the machine's speed), as regimes for the queue model (common/queueing.h,
  // RegimesFromWindows), each for an equal share of the requests.
  const size_t regime_requests = static_cast<size_t>(std::max(2, absl::GetFlag(FLAGS_regime_requests)));
  // Regimes of times in ms, as (means in ms, SCV within a window).
  auto regimes_of = [regime_requests](const std::vector<double>& ms) {
    std::vector<std::vector<double>> windows;
    for (size_t i = 0; i + regime_requests <= ms.size(); i += regime_requests) {
      windows.emplace_back();
      for (size_t j = i; j < i + regime_requests; ++j) windows.back().push_back(ms[j] / 1000.0);
    }
    nlohmann::json means = nlohmann::json::array();
    double scv = 0;
    for (const auto& g : eenn::common::RegimesFromWindows(windows)) {
      means.push_back(g.service_mean_s * 1000);
      scv = g.service_scv;
    }
    return std::make_pair(means, scv);
  };
  const auto [regimes_ms, regimes_scv] = regimes_of(gaps_ms);
  // The device's own service times (reply timings) in windows of as many
  // consecutive requests, in the order they were sent: the drift during an
  // open-loop run, whatever the load.
  const auto [service_regimes_ms, service_regimes_scv] = regimes_of(service);
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
       {{"mean", service_ms.mean}, {"p50", service_ms.p50}, {"p90", service_ms.p90}, {"p99", service_ms.p99},
        {"m2", service_moments.second_moment}, {"scv", service_moments.scv}, {"n", service_moments.n},
        {"regime_requests", regime_requests}, {"regimes_ms", service_regimes_ms},
        {"regimes_scv", service_regimes_scv}}},
      {"answer_gap_ms",
       {{"mean", gap_moments.mean}, {"m2", gap_moments.second_moment}, {"scv", gap_moments.scv},
        {"n", gap_moments.n}, {"regime_requests", regime_requests}, {"regimes_ms", regimes_ms}, {"regimes_scv", regimes_scv}}},
      {"decided", decided},
      {"bytes_per_offload", offloaded > 0 ? static_cast<double>(offload_bytes) / offloaded : 0.0},
      {"offloaded", offloaded},
      {"errors", errors},
      {"wall_s", wall_s},
      {"throughput_rps", n / std::max(wall_s, 1e-9)},
      {"concurrency", concurrency}};
  std::vector<eenn::common::WindowStats> windows;
  if (open_loop) {
    // Answers after their deadline are missed, not answered; the loss ratio is
    // (rejected + missed) / arrivals.
    const eenn::common::WindowStats total = eenn::common::AggregateAll(records, open_duration_s, deadline_ms);
    windows = eenn::common::AggregateWindows(records, absl::GetFlag(FLAGS_window_s), open_duration_s, deadline_ms);
    auto window_json = [](const eenn::common::WindowStats& w) {
      return nlohmann::json{{"start_s", w.start_s},
                            {"end_s", w.end_s},
                            {"arrivals", w.arrivals},
                            {"answered", w.answered},
                            {"rejected", w.rejected},
                            {"missed", w.missed},
                            {"failed", w.failed},
                            {"loss_ratio", w.LossRatio()},
                            {"accuracy", w.labelled > 0 ? nlohmann::json(w.Accuracy()) : nlohmann::json(nullptr)},
                            {"labelled", w.labelled},
                            {"p50_ms", w.p50_ms},
                            {"p99_ms", w.p99_ms}};
    };
    summary["mode"] = "open";
    summary["arrival_process"] = arrival_spec.ToString();
    summary["seed"] = absl::GetFlag(FLAGS_seed);
    summary["duration_s"] = open_duration_s;
    summary["offered_rate"] = open_duration_s > 0 ? static_cast<double>(n) / open_duration_s : 0.0;
    summary["deadline_ms"] = deadline_ms;
    summary["window_s"] = absl::GetFlag(FLAGS_window_s);
    summary["arrivals"] = total.arrivals;
    summary["answered"] = total.answered;
    summary["missed"] = total.missed;
    summary["lost"] = total.missed;
    summary["loss_ratio"] = total.LossRatio();
    summary["totals"] = window_json(total);
    summary["windows"] = nlohmann::json::array();
    for (const auto& w : windows) summary["windows"].push_back(window_json(w));
    summary["send_lag_ms"] = {{"mean", n > 0 ? lag_sum_ms / n : 0.0}, {"max", lag_max_ms}};
    summary["max_in_flight"] = max_in_flight.load();
    summary.erase("concurrency");
    if (!absl::GetFlag(FLAGS_windows_csv).empty()) {
      std::ofstream csv(absl::GetFlag(FLAGS_windows_csv));
      csv << eenn::common::WindowsCsv(windows);
      if (!csv) return Fail("cannot write " + absl::GetFlag(FLAGS_windows_csv));
    }
  } else {
    summary["mode"] = "closed";
  }
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
  if (open_loop) {
    std::printf("eenn-client: %zu arrivals (%s, %.1f req/s offered, seed %llu) to %s (model '%s' version '%s', "
                "split %d), deadline %d ms, %.1f s\n",
                n, arrival_spec.ToString().c_str(), summary["offered_rate"].get<double>(),
                static_cast<unsigned long long>(absl::GetFlag(FLAGS_seed)), absl::GetFlag(FLAGS_device).c_str(),
                info.model_name().c_str(), info.model_version().c_str(), summary["split_layer"].get<int>(),
                deadline_ms, wall_s);
    std::printf("  answered in time %lld, rejected %lld, missed %lld, failed %lld; loss ratio %.4f; at most %lld in "
                "flight; sent late by %.2f ms on average, %.2f ms at most\n",
                static_cast<long long>(summary["answered"].get<int64_t>()), static_cast<long long>(rejected),
                static_cast<long long>(summary["missed"].get<int64_t>()), static_cast<long long>(failed),
                summary["loss_ratio"].get<double>(), static_cast<long long>(max_in_flight.load()),
                n > 0 ? lag_sum_ms / n : 0.0, lag_max_ms);
  } else {
    std::printf("eenn-client: %zu requests to %s (model '%s' version '%s', split %d), concurrency %d, %.1f s\n", n,
                absl::GetFlag(FLAGS_device).c_str(), info.model_name().c_str(), info.model_version().c_str(),
                summary["split_layer"].get<int>(), concurrency, wall_s);
    std::printf("  answered %lld, rejected %lld, failed %lld, lost %lld; throughput %.1f req/s\n",
                static_cast<long long>(answered), static_cast<long long>(rejected), static_cast<long long>(failed),
                static_cast<long long>(lost), n / std::max(wall_s, 1e-9));
  }
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
  std::printf("  device service ms: mean %.3f, second moment %.3f ms^2, SCV %.3f\n", service_moments.mean,
              service_moments.second_moment, service_moments.scv);
  if (open_loop) {
    std::printf("  %8s %8s %8s %8s %8s %8s %8s %10s %9s %9s %9s\n", "from_s", "to_s", "arrived", "answered",
                "rejected", "missed", "failed", "loss", "accuracy", "p50_ms", "p99_ms");
    for (const auto& w : windows) {
      std::printf("  %8.2f %8.2f %8lld %8lld %8lld %8lld %8lld %10.4f %9s %9.2f %9.2f\n", w.start_s, w.end_s,
                  static_cast<long long>(w.arrivals), static_cast<long long>(w.answered),
                  static_cast<long long>(w.rejected), static_cast<long long>(w.missed),
                  static_cast<long long>(w.failed), w.LossRatio(),
                  w.labelled > 0 ? absl::StrCat(absl::SixDigits(100 * w.Accuracy()), "%").c_str() : "-", w.p50_ms,
                  w.p99_ms);
    }
  }
  if (summary.contains("rss_kib")) {
    const auto& r = summary["rss_kib"];
    std::printf("  resident memory of pid %d: %lld KiB after %.0f s warm-up, %lld KiB at the end (%+.2f%%), peak %lld\n",
                watch_pid, static_cast<long long>(r["after_warmup"].get<int64_t>()), r["warmup_s"].get<double>(),
                static_cast<long long>(r["end"].get<int64_t>()), 100 * r["growth"].get<double>(),
                static_cast<long long>(r["peak"].get<int64_t>()));
  }
  return failed > 0 ? 2 : 0;
}
