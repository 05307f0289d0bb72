// Load-aware exits against real daemons on loopback: the same bursty arrival
// trace replayed by eenn-client into an eenn-device with the bundle's fixed
// thresholds and into one with the load controller (--loss_target), which
// must move to a cheaper exit configuration during the burst and lose fewer
// requests; its state is exported as metrics and answered by PlannerService.
// Inputs: a few CIFAR-10 test images per class (copied to a temporary
// directory), so that early exits fire as they do on real data.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "proto/eenn.grpc.pb.h"
#include "tests/file_util.h"
#include "tests/integration/daemons.h"

namespace eenn {
namespace {

namespace fs = std::filesystem;
using testing::Daemon;
using testing::RunClient;
using testing::StartDaemon;

const std::string kBundle = std::string(EENN_SOURCE_DIR) + "/models/cifar10-resnet18";
const std::string kTestSet = std::string(EENN_CIFAR10_DIR) + "/test";

class LoadControlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    if (!fs::is_directory(kTestSet)) return;
    for (const auto& cls : fs::directory_iterator(kTestSet)) {
      if (!cls.is_directory()) continue;
      const std::string to = dir_->Join("images/" + cls.path().filename().string());
      fs::create_directories(to);
      std::vector<fs::path> files;
      for (const auto& f : fs::directory_iterator(cls.path())) files.push_back(f.path());
      std::sort(files.begin(), files.end());
      for (size_t i = 0; i < files.size() && i < 8; ++i) fs::copy_file(files[i], to + "/" + files[i].filename().string());
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!fs::is_directory(dir_->Join("images"))) GTEST_SKIP() << "no CIFAR-10 test images at " << kTestSet << " (cmake -DEENN_CIFAR10_DIR=...)";
  }
  void StartDevice(Daemon& d, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--bundle=" + kBundle, "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                                     "--plaintext", "--workers=1", "--queue_capacity=4"};
    args.insert(args.end(), extra.begin(), extra.end());
    StartDaemon(d, "eenn-device", args, dir_->path(), "device" + std::to_string(counter_++));
  }
  std::string Path(const std::string& name) { return dir_->Join(name + std::to_string(counter_++)); }
  std::string Images() { return dir_->Join("images"); }

  static testing::TempDir* dir_;
  static std::atomic<int> counter_;  // Path() is called from the test's threads too
};
testing::TempDir* LoadControlTest::dir_ = nullptr;
std::atomic<int> LoadControlTest::counter_{0};

// Evenly spaced arrivals: `calm` per second for 3 s, `burst` per second for
// 4 s, `calm` again for 3 s.
std::string Trace(double calm, double burst) {
  std::string t = "id,time\n";
  int id = 0;
  auto phase = [&](double from, double to, double rate) {
    for (double x = from; x < to - 1e-9; x += 1.0 / rate) t += std::to_string(id++) + "," + std::to_string(x) + "\n";
  };
  phase(0, 3, calm);
  phase(3, 7, burst);
  phase(7, 10, calm);
  return t;
}

TEST_F(LoadControlTest, UnderABurstTheControllerMovesToACheaperConfiguration) {
  Daemon fixed, adaptive;
  StartDevice(fixed, {});
  StartDevice(adaptive, {"--loss_target=0.01", "--control_interval_ms=100", "--control_dwell_ms=2000"});
  // Both devices run side by side, so that they share whatever else this
  // machine is doing. Warm them up, then take the fixed device's throughput
  // while both are kept busy (closed loop, 3 requests in flight each) as its
  // capacity under this contention.
  nlohmann::json warm_a, warm_b;
  for (int round = 0; round < 2; ++round) {
    std::thread t([&] { warm_b = RunClient(adaptive.addr(), Images(), Path("warm.jsonl"), "--concurrency=3"); });
    warm_a = RunClient(fixed.addr(), Images(), Path("warm.jsonl"), "--concurrency=3");
    t.join();
  }
  ASSERT_GT(warm_a["answered"].get<int>(), 50) << warm_a.dump();
  ASSERT_GT(warm_b["answered"].get<int>(), 50) << warm_b.dump();
  const double capacity = warm_a["throughput_rps"].get<double>();
  const double service_ms = 1000.0 / capacity;
  ASSERT_GT(capacity, 0) << warm_a.dump();
  // Calm at a quarter of the fixed device's capacity, the burst 50% above it,
  // the same trace into both at once.
  const std::string trace = Path("trace") + ".csv";
  testing::WriteAll(trace, Trace(capacity / 4, capacity * 1.5));
  const std::string flags = "--arrivals=trace:" + trace + " --window_s=1 --deadline_ms=60000";
  // Whether the controller loses less than fixed thresholds is a measurement,
  // made by tools/bench/load_control_compare.py on a quiet machine; here the two
  // devices only see the same trace, and the test checks what the controller did.
  nlohmann::json a, b;
  std::thread t([&] { b = RunClient(adaptive.addr(), Images(), Path("adaptive.jsonl"), flags); });
  a = RunClient(fixed.addr(), Images(), Path("fixed.jsonl"), flags);
  t.join();
  std::printf("service %.3f ms (capacity %.0f/s); fixed: loss %.4f; adaptive: loss %.4f\n", service_ms, capacity,
              a.value("loss_ratio", -1.0), b.value("loss_ratio", -1.0));
  ASSERT_EQ(a["arrivals"], b["arrivals"]);
  EXPECT_EQ(a["failed"], 0);
  EXPECT_EQ(b["failed"], 0);

  // It moved, and says so in its metrics and through PlannerService.
  const std::string m = testing::HttpGet(adaptive.metrics_port, "/metrics");
  EXPECT_GE(testing::MetricValue(m, "eenn_device_exit_config_changes_total"), 1) << m;
  EXPECT_GE(testing::MetricValue(m, "eenn_device_exit_config"), 0) << m;
  EXPECT_GT(testing::MetricValue(m, "eenn_device_exit_config_accuracy"), 0.5) << m;
  EXPECT_GE(testing::MetricValue(m, "eenn_device_arrival_rate"), 0) << m;
  EXPECT_EQ(testing::MetricValue(testing::HttpGet(fixed.metrics_port, "/metrics"), "eenn_device_exit_config"), -1);
  EXPECT_NE(adaptive.proc.log().find("eenn-device: exit configuration"), std::string::npos) << adaptive.proc.log();

  auto planner = v1::PlannerService::NewStub(grpc::CreateChannel(adaptive.addr(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::PlanRequest req;
  v1::PlanReply reply;
  ASSERT_TRUE(planner->GetPlan(&ctx, req, &reply).ok());
  ASSERT_TRUE(reply.has_load_control());
  const auto& lc = reply.load_control();
  EXPECT_GE(lc.changes(), 1);
  EXPECT_GT(lc.num_configs(), 1);
  EXPECT_DOUBLE_EQ(lc.loss_target(), 0.01);
  EXPECT_EQ(lc.thresholds_size(), 7);
  EXPECT_EQ(reply.current_split(), lc.split());
  EXPECT_GT(lc.speed_factor(), 0);
  // Hypothetical link conditions need the live split planner.
  grpc::ClientContext ctx2;
  req.set_bandwidth_mbps(10);
  EXPECT_EQ(planner->GetPlan(&ctx2, req, &reply).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

// A burst is met when it fills the queue, not at the next decision period:
// with the period far beyond the run (60 s), only the decision that an
// arrival at the high-water mark brings forward can move the configuration,
// and without it (--control_pressure_margin=0) nothing moves.
TEST_F(LoadControlTest, QueueAtHighWaterBringsTheDecisionForward) {
  for (const bool early : {true, false}) {
    Daemon device;
    StartDevice(device, {"--loss_target=0.01", "--control_interval_ms=60000",
                         early ? "--control_pressure_margin=0.1" : "--control_pressure_margin=0"});
    // 8 requests in flight against 1 worker and 4 queue slots: the queue sits
    // at its high-water mark (2) throughout.
    auto s = RunClient(device.addr(), Images(), Path("burst.jsonl"), "--concurrency=8 --duration_s=1.5");
    ASSERT_GT(s["requests"].get<int>(), 20) << s.dump();
    EXPECT_EQ(s["failed"], 0) << s.dump();
    const std::string m = testing::HttpGet(device.metrics_port, "/metrics");
    const double changes = testing::MetricValue(m, "eenn_device_exit_config_changes_total");
    if (early) {
      EXPECT_GE(changes, 1) << m;
      EXPECT_GT(testing::MetricValue(m, "eenn_device_exit_config"), 0) << m;  // a cheaper one than the first
      EXPECT_NE(device.proc.log().find("eenn-device: exit configuration"), std::string::npos) << device.proc.log();
    } else {
      EXPECT_EQ(changes, 0) << m;
      EXPECT_EQ(testing::MetricValue(m, "eenn_device_exit_config"), 0) << m;
    }
  }
}

TEST_F(LoadControlTest, RefusesConfigurationsForAnotherBundleAndConflictingFlags) {
  // A configs.json for another version of the model.
  std::string text = testing::ReadAll(kBundle + "/configs.json");
  const size_t at = text.find("\"model_version\": \"");
  ASSERT_NE(at, std::string::npos);
  text.insert(at + std::string("\"model_version\": \"").size(), "9");
  const std::string other = Path("configs") + ".json";
  testing::WriteAll(other, text);
  const std::string base = testing::BinPath("eenn-device") + " --bundle=" + kBundle +
                           " --listen=127.0.0.1:0 --metrics_address= --plaintext --loss_target=0.01 ";
  auto r = testing::RunCommand(base + "--configs=" + other + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("were made for model"), std::string::npos) << r.out;
  r = testing::RunCommand(base + "--configs=" + other + ".missing 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("cannot read configurations"), std::string::npos) << r.out;
  r = testing::RunCommand(base + "--split=10 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("drop --split"), std::string::npos) << r.out;
  r = testing::RunCommand(base + "--device_profile=/nonexistent 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("live split planning"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace eenn
