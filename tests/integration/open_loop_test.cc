// eenn-client's open-loop mode against a real eenn-device on loopback:
// Poisson overload refused and reported per window, a replayed trace whose
// burst misses its deadlines, on/off phases visible in the windows, and bad
// --arrivals values refused before connecting.
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <sstream>

#include "common/workload.h"
#include "tests/file_util.h"
#include "tests/integration/daemons.h"

namespace eenn {
namespace {

namespace fs = std::filesystem;
using testing::Daemon;
using testing::RunClient;
using testing::StartDaemon;

class OpenLoopTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    cv::RNG rng(11);
    for (const char* label : {"cat", "dog"}) {
      fs::create_directories(dir_->Join(std::string("images/") + label));
      for (int i = 0; i < 6; ++i) {
        cv::Mat m(32, 32, CV_8UC3);
        rng.fill(m, cv::RNG::UNIFORM, 0, 255);
        cv::imwrite(dir_->Join(std::string("images/") + label + "/" + std::to_string(i) + ".png"), m);
      }
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  // A device that decides everything itself (split after the last layer).
  void StartDevice(Daemon& d, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--bundle=" + std::string(EENN_SOURCE_DIR) + "/models/cifar10-resnet18",
                                     "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0", "--plaintext",
                                     "--split=12"};
    args.insert(args.end(), extra.begin(), extra.end());
    StartDaemon(d, "eenn-device", args, dir_->path(), "device" + std::to_string(counter_++));
  }
  std::string Path(const std::string& name) { return dir_->Join(name + std::to_string(counter_++)); }
  std::string Images() { return dir_->Join("images"); }

  static testing::TempDir* dir_;
  static std::atomic<int> counter_;
};
testing::TempDir* OpenLoopTest::dir_ = nullptr;
std::atomic<int> OpenLoopTest::counter_{0};

// Every window's outcomes add up to its arrivals, and the windows to the totals.
void CheckWindows(const nlohmann::json& s) {
  int64_t arrivals = 0, rejected = 0, missed = 0;
  for (const auto& w : s["windows"]) {
    EXPECT_EQ(w["answered"].get<int64_t>() + w["rejected"].get<int64_t>() + w["missed"].get<int64_t>() +
                  w["failed"].get<int64_t>(),
              w["arrivals"].get<int64_t>())
        << w.dump();
    if (w["arrivals"].get<int64_t>() > 0) {
      EXPECT_NEAR(w["loss_ratio"].get<double>(),
                  double(w["rejected"].get<int64_t>() + w["missed"].get<int64_t>()) / w["arrivals"].get<int64_t>(),
                  1e-9);
    }
    arrivals += w["arrivals"].get<int64_t>();
    rejected += w["rejected"].get<int64_t>();
    missed += w["missed"].get<int64_t>();
  }
  EXPECT_EQ(arrivals, s["arrivals"].get<int64_t>());
  EXPECT_EQ(rejected, s["rejected"].get<int64_t>());
  EXPECT_EQ(missed, s["missed"].get<int64_t>());
  EXPECT_EQ(s["requests"], s["arrivals"]);
  EXPECT_NEAR(s["loss_ratio"].get<double>(), double(rejected + missed) / std::max<int64_t>(arrivals, 1), 1e-9);
}

TEST_F(OpenLoopTest, PoissonOverloadIsRefusedAndReportedPerWindow) {
  Daemon device;
  StartDevice(device, {"--workers=1", "--queue_capacity=2"});
  const std::string csv = Path("windows.csv"), results = Path("results.jsonl");
  auto s = RunClient(device.addr(), Images(), results,
                     "--arrivals=poisson:1000 --duration_s=3 --seed=5 --window_s=1 --deadline_ms=20000 "
                     "--regime_requests=10 --windows_csv=" + csv);
  common::ArrivalSpec spec;
  spec.rate = 1000;
  const auto expected = common::GenerateArrivals(spec, 3, 5);
  EXPECT_EQ(s["mode"], "open");
  EXPECT_EQ(s["arrival_process"], "poisson:1000");
  EXPECT_EQ(s["arrivals"].get<size_t>(), expected.size()) << s.dump();
  // A device with one worker does not keep up with 1000 requests/s: a full
  // queue refuses with RESOURCE_EXHAUSTED, and nothing times out.
  EXPECT_GT(s["rejected"].get<int64_t>(), 0) << s.dump();
  EXPECT_GT(s["answered"].get<int64_t>(), 0) << s.dump();
  EXPECT_EQ(s["missed"], 0);
  EXPECT_EQ(s["failed"], 0);
  EXPECT_EQ(s["errors"]["RESOURCE_EXHAUSTED"], s["rejected"]);
  // The sender kept to the schedule although up to 3 requests were in the device.
  EXPECT_GT(s["max_in_flight"].get<int64_t>(), 3);
  ASSERT_EQ(s["windows"].size(), 3u) << s.dump();
  CheckWindows(s);
  EXPECT_EQ(s["windows"][1]["start_s"], 1.0);
  EXPECT_EQ(s["windows"][1]["end_s"], 2.0);
  EXPECT_FALSE(s["totals"]["accuracy"].is_null());  // folder names are class names
  EXPECT_GT(s["device_service_ms"]["m2"].get<double>(), 0);
  // Gaps between consecutive answers: one fewer than the answers, within the
  // run, and with one worker kept busy no shorter on average than half its
  // own timing of a request (answers cannot come faster than it serves).
  const auto& gap = s["answer_gap_ms"];
  EXPECT_EQ(gap["n"].get<int64_t>(), s["answered"].get<int64_t>() - 1) << s.dump();
  EXPECT_LE(gap["mean"].get<double>() * gap["n"].get<double>(), 1000 * s["wall_s"].get<double>());
  EXPECT_GE(gap["mean"].get<double>(), 0.5 * s["device_service_ms"]["mean"].get<double>()) << s.dump();
  EXPECT_GT(gap["scv"].get<double>(), 0);
  // Service-speed regimes: one per 10 consecutive answers (gaps) or reply
  // timings, each a positive mean.
  const auto answered = s["answered"].get<size_t>();
  EXPECT_EQ(gap["regimes_ms"].size(), (answered - 1) / 10) << s.dump();
  EXPECT_EQ(s["device_service_ms"]["regimes_ms"].size(), answered / 10) << s.dump();
  for (const auto& x : s["device_service_ms"]["regimes_ms"]) EXPECT_GT(x.get<double>(), 0);
  EXPECT_GT(s["device_service_ms"]["regimes_scv"].get<double>(), 0);
  // The CSV: a header and one line per window.
  std::istringstream in(testing::ReadAll(csv));
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u) << testing::ReadAll(csv);
  EXPECT_EQ(lines[0].rfind("start_s,end_s,arrivals,answered,rejected,missed,failed,loss_ratio", 0), 0u);
  EXPECT_EQ(lines[1].rfind("0,1," + std::to_string(s["windows"][0]["arrivals"].get<int64_t>()) + ",", 0), 0u)
      << lines[1];
  // Each result line has its arrival time and how late it was sent; answered ones the device's
  // service time.
  EXPECT_NE(testing::ReadAll(results).find("\"arrival_s\":"), std::string::npos);
  EXPECT_NE(testing::ReadAll(results).find("\"send_lag_ms\":"), std::string::npos);
  EXPECT_NE(testing::ReadAll(results).find("\"service_ms\":"), std::string::npos);
  // The device's counters for the arrivals' work: busy time, the worker's own
  // CPU time within it, and the arrivals while it was busy (at 1000/s against
  // one worker, most of them); eenn-queue takes the work per arrival.
  const std::string dm = testing::HttpGet(device.metrics_port, "/metrics");
  const double busy = testing::MetricValue(dm, "eenn_device_worker_busy_seconds_total");
  const double cpu = testing::MetricValue(dm, "eenn_device_worker_cpu_seconds_total");
  const double seen = testing::MetricValue(dm, "eenn_device_arrivals_while_busy_total");
  EXPECT_GT(cpu, 0);
  EXPECT_LE(cpu, busy * 1.001 + 0.01);
  EXPECT_GT(seen, 0.5 * s["arrivals"].get<double>()) << dm;
  EXPECT_LE(seen, s["arrivals"].get<double>());
  const double work_ms = 1000 * (busy - cpu) / seen;
  const double taken = testing::MetricValue(dm, "eenn_device_stage_duration_seconds_count{stage=\"queue\"}");
  ASSERT_GT(taken, 0);
  auto q = testing::RunCommand(testing::BinPath("eenn-queue") + " --json --rate=500 --workers=1 --queue_capacity=2" +
                               " --service_ms=" + std::to_string(1000 * cpu / taken) +
                               " --service_scv=0.4 --arrival_work_ms=" + std::to_string(work_ms));
  ASSERT_EQ(q.exit_code, 0) << q.out;
  const auto pred = nlohmann::json::parse(q.out);
  EXPECT_NEAR(pred["arrival_work_ms"].get<double>(), work_ms, 1e-4);
  EXPECT_GT(pred["loss_probability"].get<double>(), 0);
  EXPECT_LT(pred["loss_probability"].get<double>(), 1);
  auto two = testing::RunCommand(testing::BinPath("eenn-queue") +
                                 " --json --rate=500 --workers=2 --service_ms=2 --arrival_work_ms=0.1 2>&1");
  EXPECT_NE(two.exit_code, 0);
  EXPECT_NE(two.out.find("one server only"), std::string::npos) << two.out;
}

// --shuffle sends every file once, in an order set by --seed.
TEST_F(OpenLoopTest, ShuffleSendsEveryFileInASeededOrder) {
  Daemon device;
  StartDevice(device, {"--workers=1"});
  auto order = [&](const std::string& flags) {
    const std::string results = Path("order.jsonl");
    auto s = RunClient(device.addr(), Images(), results, "--concurrency=1 " + flags);
    EXPECT_EQ(s["answered"], 12) << s.dump();
    std::vector<std::string> files;
    std::istringstream in(testing::ReadAll(results));
    for (std::string line; std::getline(in, line);) files.push_back(nlohmann::json::parse(line)["file"]);
    return files;
  };
  const auto listed = order(""), a = order("--shuffle --seed=3"), b = order("--shuffle --seed=3"),
             c = order("--shuffle --seed=4");
  ASSERT_EQ(listed.size(), 12u);
  EXPECT_TRUE(std::is_sorted(listed.begin(), listed.end()));
  EXPECT_NE(a, listed);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, listed);
}

TEST_F(OpenLoopTest, TraceReplayBurstMissesItsDeadline) {
  Daemon device;
  StartDevice(device, {"--workers=1", "--queue_capacity=200"});
  // Warm the device up (its first inferences are slow).
  auto warm = RunClient(device.addr(), Images(), Path("results.jsonl"), "--concurrency=1");
  ASSERT_EQ(warm["answered"], 12) << warm.dump();
  // The trace is scaled to the measured latency so that it means the same on
  // a fast build and under a sanitizer (several times slower): 10 requests one
  // unit apart (each done well within its deadline), then 100 at once at 12
  // units, which one worker cannot finish within the deadline.
  const double p50_s = warm["latency_ms"]["p50"].get<double>() / 1000.0;
  const double unit = std::max(0.1, 3 * p50_s);
  const int deadline_ms = std::max(150, static_cast<int>(1500 * unit));
  std::string trace = "# arrivals\nid,time\n";
  int id = 0;
  for (int i = 0; i < 10; ++i) trace += std::to_string(id++) + "," + std::to_string(unit * i) + "\n";
  for (int i = 0; i < 100; ++i) trace += std::to_string(id++) + "," + std::to_string(12 * unit) + "\n";
  const std::string file = Path("trace") + ".csv";
  testing::WriteAll(file, trace);
  auto s = RunClient(device.addr(), Images(), Path("results.jsonl"),
                     "--arrivals=trace:" + file + " --window_s=" + std::to_string(10 * unit) +
                         " --deadline_ms=" + std::to_string(deadline_ms));
  EXPECT_EQ(s["arrivals"], 110) << s.dump();
  EXPECT_NEAR(s["duration_s"].get<double>(), 12 * unit, 1e-5);
  ASSERT_EQ(s["windows"].size(), 2u) << s.dump();
  CheckWindows(s);
  EXPECT_EQ(s["windows"][0]["arrivals"], 10);
  EXPECT_EQ(s["windows"][1]["arrivals"], 100);
  // 100 requests at once through one worker take far longer than 150 ms: the
  // later ones miss the deadline (waiting in the queue or answered late), and
  // nothing is refused by the large queue.
  EXPECT_EQ(s["rejected"], 0);
  EXPECT_GT(s["windows"][1]["missed"].get<int64_t>(), 20) << s.dump();
  EXPECT_GT(s["windows"][1]["loss_ratio"].get<double>(), s["windows"][0]["loss_ratio"].get<double>()) << s.dump();
}

TEST_F(OpenLoopTest, OnOffPhasesShowInTheWindows) {
  Daemon device;
  StartDevice(device, {"--workers=1", "--queue_capacity=64"});
  auto s = RunClient(device.addr(), Images(), Path("results.jsonl"),
                     "--arrivals=onoff:60,0,0.5,0.5 --duration_s=2 --window_s=0.5 --seed=3");
  ASSERT_EQ(s["windows"].size(), 4u) << s.dump();
  CheckWindows(s);
  EXPECT_GT(s["windows"][0]["arrivals"].get<int64_t>(), 10);
  EXPECT_EQ(s["windows"][1]["arrivals"], 0);
  EXPECT_GT(s["windows"][2]["arrivals"].get<int64_t>(), 10);
  EXPECT_EQ(s["windows"][3]["arrivals"], 0);
}

TEST_F(OpenLoopTest, BadArrivalsAreRefusedBeforeConnecting) {
  const std::string file = Path("bad") + ".csv";
  testing::WriteAll(file, "t\n0.1\n0.2\nsoon\n");
  // No device listens on port 1: these fail on their flags, not on the connection.
  auto r = testing::RunCommand(testing::BinPath("eenn-client") + " --plaintext --device=127.0.0.1:1 --arrivals=trace:" +
                               file + " " + Images() + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find(file + " line 4: 'soon' is not a time in seconds"), std::string::npos) << r.out;
  r = testing::RunCommand(testing::BinPath("eenn-client") + " --plaintext --device=127.0.0.1:1 --arrivals=poisson:5 " +
                          Images() + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("needs --duration_s"), std::string::npos) << r.out;
  r = testing::RunCommand(testing::BinPath("eenn-client") + " --plaintext --device=127.0.0.1:1 --arrivals=burst:5 " +
                          Images() + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("unknown process 'burst'"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace eenn
