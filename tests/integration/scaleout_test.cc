// Server tier scale-out with the real binaries on loopback: three eenn-server
// processes behind one eenn-device whose --server lists them. The device's
// channel balances offloads round robin over the healthy servers; each
// server's Prometheus counter eenn_server_requests_total{code="OK"} shows its
// share. One server is SIGKILLed mid-run: every request is still answered.
// An in-process backend that reports NOT_SERVING on grpc.health.v1 shows the
// client-side health check taking a live but unhealthy server out of rotation.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/manifest.h"
#include "device/offload_client.h"
#include "proto/eenn.grpc.pb.h"
#include "tests/integration/daemons.h"
#include "tests/process_util.h"

namespace eenn {
namespace {

namespace fs = std::filesystem;
using testing::BinPath;
using testing::RunCommand;
using testing::Daemon;
using testing::StartDaemon;

const std::string kBundle = std::string(EENN_SOURCE_DIR) + "/models/cifar10-resnet18";

// CIFAR-10 test images as class folders (the EENN_CIFAR10_DIR CMake setting).
const std::string kImages = std::string(EENN_CIFAR10_DIR) + "/test";

// Resume requests a server answered successfully (-1 when unreachable).
double ServedOk(const Daemon& s) {
  return testing::MetricValue(testing::HttpGet(s.metrics_port, "/metrics"), "eenn_server_requests_total{code=\"OK\"}");
}

// A fake offload backend in this process: reports the bundle's model, answers
// Resume with INTERNAL and counts the calls; its health status is ours to set.
class FakeBackend final : public v1::OffloadService::Service {
 public:
  FakeBackend(std::string name, std::string version) : name_(std::move(name)), version_(std::move(version)) {}
  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::ModelInfoRequest*, v1::ModelInfo* info) override {
    info->set_model_name(name_);
    info->set_model_version(version_);
    return grpc::Status::OK;
  }
  grpc::Status Resume(grpc::ServerContext*, const v1::ResumeRequest*, v1::ResumeReply*) override {
    resumes++;
    return grpc::Status(grpc::StatusCode::INTERNAL, "fake backend: never resumes");
  }
  std::atomic<int> resumes{0};

 private:
  std::string name_, version_;
};

class ScaleOutTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(fs::exists(kBundle + "/manifest.json")) << kBundle;
    const std::string& images = kImages;
    if (!fs::is_directory(images)) return;  // every test skips (SetUp)
    // The first images of every class, in a fixed order.
    std::vector<std::string> classes;
    for (const auto& e : fs::directory_iterator(images)) {
      if (e.is_directory()) classes.push_back(e.path().string());
    }
    std::sort(classes.begin(), classes.end());
    std::vector<std::vector<std::string>> per_class;
    for (const auto& c : classes) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(c)) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      per_class.push_back(std::move(files));
    }
    images_ = new std::vector<std::string>;
    ASSERT_FALSE(per_class.empty()) << images << " has no class folders";
    for (size_t i = 0; images_->size() < 400 && i < 10000; ++i) {
      for (const auto& files : per_class) {
        if (i < files.size()) images_->push_back(files[i]);
      }
    }
    ASSERT_GE(images_->size(), 300u) << images << " holds too few images";
  }
  static void TearDownTestSuite() {
    delete images_;
    images_ = nullptr;
  }
  void SetUp() override {
    if (images_ == nullptr) GTEST_SKIP() << "no CIFAR-10 test images at " << kImages << " (cmake -DEENN_CIFAR10_DIR=...)";
  }

  void StartServer(Daemon& s, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--bundle=" + kBundle, "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                                     "--plaintext"};
    args.insert(args.end(), extra.begin(), extra.end());
    StartDaemon(s, "eenn-server", args, dir_.path(), "server" + std::to_string(counter_++));
  }
  // --split=1: no exit lies below layer 1, so every request is offloaded.
  void StartDevice(Daemon& d, const std::string& servers) {
    StartDaemon(d, "eenn-device",
                {"--bundle=" + kBundle, "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                 "--server=" + servers, "--plaintext", "--server_plaintext", "--split=1", "--encoding=int8",
                 "--probe_interval_ms=100", "--offload_timeout_ms=5000",
                 // Routing is under test: every request offloaded, even when a
                 // queued server is slower than finishing on the device.
                 "--server_local_factor=0"},
                dir_.path(), "device" + std::to_string(counter_++));
  }

  // eenn-client over images [first, first + n).
  nlohmann::json RunClient(const Daemon& device, size_t first, size_t n) {
    std::string cmd = BinPath("eenn-client") + " --plaintext --quiet --json --concurrency=4 --device=" + device.addr();
    for (size_t i = first; i < first + n; ++i) cmd += " " + images_->at(i);
    auto r = RunCommand(cmd + " 2>&1");
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      ADD_FAILURE() << "eenn-client output is not JSON (exit " << r.exit_code << "):\n" << r.out;
      return nlohmann::json::object();
    }
    return j;
  }

  testing::TempDir dir_;
  int counter_ = 0;
  static std::vector<std::string>* images_;
};
std::vector<std::string>* ScaleOutTest::images_ = nullptr;

TEST_F(ScaleOutTest, OffloadsSpreadRoundRobinAndNoRequestIsLostWhenAServerDies) {
  Daemon servers[3], device;
  for (auto& s : servers) StartServer(s);
  StartDevice(device, servers[0].addr() + "," + servers[1].addr() + "," + servers[2].addr());

  // Every offload is answered by exactly one server, each carrying a fair share.
  const int n1 = 90;
  auto first = RunClient(device, 0, n1);
  EXPECT_EQ(first["answered"], n1) << first.dump();
  EXPECT_EQ(first["lost"], 0);
  EXPECT_EQ(first["failed"], 0);
  EXPECT_EQ(first["decided"]["server"], n1) << first.dump();
  double before[3], total = 0;
  for (int i = 0; i < 3; ++i) {
    before[i] = ServedOk(servers[i]);
    total += before[i];
    EXPECT_GE(before[i], 0.2 * n1) << "server " << i << " answered " << before[i] << " of " << n1;
  }
  EXPECT_EQ(total, n1);
  std::printf("spread over 3 servers: %.0f %.0f %.0f of %d\n", before[0], before[1], before[2], n1);

  // SIGKILL one server while requests are in flight: none is lost or fails.
  const int n2 = 150;
  nlohmann::json second;
  std::thread client([&] { second = RunClient(device, n1, n2); });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < until && ServedOk(servers[1]) < before[1] + 10) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const double at_kill[3] = {ServedOk(servers[0]), ServedOk(servers[1]), ServedOk(servers[2])};
  servers[1].proc.Kill(SIGKILL);
  client.join();
  EXPECT_GE(at_kill[1], before[1] + 10) << "the run ended before the kill";
  EXPECT_EQ(second["requests"], n2) << second.dump();
  EXPECT_EQ(second["answered"], n2) << second.dump();
  EXPECT_EQ(second["lost"], 0);
  EXPECT_EQ(second["failed"], 0);
  EXPECT_EQ(second["decided"]["server"].get<int>() + second["decided"]["fallback"].get<int>(), n2);
  const double after[2] = {ServedOk(servers[0]), ServedOk(servers[2])};
  std::printf("kill mid-run: %d requests, %d answered (%d by servers, %d fallback), %d lost; "
              "after the kill the survivors answered %.0f and %.0f\n",
              second["requests"].get<int>(), second["answered"].get<int>(), second["decided"]["server"].get<int>(),
              second["decided"]["fallback"].get<int>(), second["lost"].get<int>(), after[0] - at_kill[0],
              after[1] - at_kill[2]);
  // Calls on the dying server are retried on the survivors, not finished locally.
  EXPECT_EQ(second["decided"]["fallback"], 0) << second.dump();
  EXPECT_GT(after[0], at_kill[0]);
  EXPECT_GT(after[1], at_kill[2]);

  // The two survivors share the load from now on.
  const int n3 = 60;
  auto third = RunClient(device, n1 + n2, n3);
  EXPECT_EQ(third["answered"], n3) << third.dump();
  EXPECT_EQ(third["decided"]["server"], n3) << third.dump();
  const double d0 = ServedOk(servers[0]) - after[0], d2 = ServedOk(servers[2]) - after[1];
  EXPECT_EQ(d0 + d2, n3);
  EXPECT_GE(d0, n3 / 3.0);
  EXPECT_GE(d2, n3 / 3.0);

  // All servers gone: the device finishes locally, still nothing lost.
  servers[0].proc.Kill(SIGKILL);
  servers[2].proc.Kill(SIGKILL);
  auto alone = RunClient(device, 0, 20);
  EXPECT_EQ(alone["answered"], 20) << alone.dump();
  EXPECT_EQ(alone["decided"]["fallback"], 20) << alone.dump();
  device.proc.Kill(SIGTERM);
  EXPECT_EQ(device.proc.Wait(), 0) << device.proc.log();
}

TEST_F(ScaleOutTest, NotServingBackendLeavesTheRotationUntilItServesAgain) {
  auto manifest = common::ReadManifest(kBundle);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  FakeBackend fake(manifest->model_name, manifest->model_version);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int fake_port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &fake_port);
  builder.RegisterService(&fake);
  auto fake_server = builder.BuildAndStart();
  ASSERT_TRUE(fake_server && fake_port > 0);
  auto* health = fake_server->GetHealthCheckService();
  ASSERT_NE(health, nullptr);
  health->SetServingStatus(false);

  Daemon servers[2], device;
  for (auto& s : servers) StartServer(s);
  StartDevice(device, servers[0].addr() + ",127.0.0.1:" + std::to_string(fake_port) + "," + servers[1].addr());

  // Reachable but NOT_SERVING: it gets nothing; the two real servers share all.
  const int n = 60;
  auto run = RunClient(device, 0, n);
  EXPECT_EQ(run["answered"], n) << run.dump();
  EXPECT_EQ(run["decided"]["server"], n) << run.dump();
  EXPECT_EQ(fake.resumes.load(), 0);
  const double a = ServedOk(servers[0]), b = ServedOk(servers[1]);
  EXPECT_EQ(a + b, n);
  EXPECT_GE(a, n / 3.0);
  EXPECT_GE(b, n / 3.0);

  // SERVING again: the health watch puts it back (its INTERNAL answers make the
  // device finish those requests locally; still every request is answered).
  health->SetServingStatus(true);
  int answered = 0, sent = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (fake.resumes.load() == 0 && std::chrono::steady_clock::now() < until) {
    auto more = RunClient(device, 0, 12);
    sent += 12;
    answered += more.value("answered", 0);
  }
  EXPECT_GT(fake.resumes.load(), 0) << "the backend never came back into rotation";
  EXPECT_EQ(answered, sent);
  fake_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

// --max_connection_age_s closes every connection gracefully after a while (so a
// device balancing over a DNS name re-resolves it); offloads carry on across
// the reconnections without a fallback or a lost request.
TEST_F(ScaleOutTest, ServerConnectionAgeingLosesNothingAndNeverFallsBack) {
  Daemon servers[2], device;
  for (auto& s : servers) StartServer(s, {"--max_connection_age_s=0.25"});
  StartDevice(device, servers[0].addr() + "," + servers[1].addr());
  const auto start = std::chrono::steady_clock::now();
  auto run = RunClient(device, 0, 300);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(run["answered"], 300) << run.dump();
  EXPECT_EQ(run["lost"], 0);
  EXPECT_EQ(run["decided"]["server"], 300) << run.dump();
  EXPECT_EQ(run["decided"]["fallback"], 0);
  EXPECT_GE(seconds, 1.0) << "the run should outlast several connection lifetimes";
  for (const auto& s : servers) {
    EXPECT_GT(testing::MetricValue(testing::HttpGet(s.metrics_port, "/metrics"),
                                   "eenn_server_requests_total{code=\"OK\"}"),
              0);
  }
}

TEST(ServerTargetTest, ListsBecomeOneMultiAddressTarget) {
  auto t = device::ParseServerTarget("127.0.0.1:5001, 127.0.0.1:5002,127.0.0.2:5003");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->uri, "ipv4:127.0.0.1:5001,127.0.0.1:5002,127.0.0.2:5003");
  EXPECT_EQ(t->backends, 3);
  EXPECT_EQ(t->common_host, "");

  // IPv6 anywhere: one ipv6: list, IPv4 entries as v4-mapped addresses.
  t = device::ParseServerTarget("[::1]:5001,127.0.0.1:5002");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->uri, "ipv6:[::1]:5001,[::ffff:127.0.0.1]:5002");

  // Names resolve now; the same host on several ports keeps its name for TLS.
  t = device::ParseServerTarget("localhost:5001,localhost:5002");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_GE(t->backends, 2);
  EXPECT_EQ(t->common_host, "localhost");

  // One address or a URI goes to gRPC as it is.
  for (const std::string s : {"server.example:50051", "dns:///servers.example:50051", "ipv4:10.0.0.1:1,10.0.0.2:1"}) {
    t = device::ParseServerTarget(s);
    ASSERT_TRUE(t.ok()) << s;
    EXPECT_EQ(t->uri, s);
  }
  EXPECT_EQ(device::ParseServerTarget("ipv4:10.0.0.1:1,10.0.0.2:1")->backends, 2);
}

TEST(ServerTargetTest, BadListsAreRefusedWithTheReason) {
  struct Case {
    std::string server, message;
  };
  for (const Case& c : std::vector<Case>{{"", "empty"},
                                         {"127.0.0.1:1,,127.0.0.1:2", "empty entry"},
                                         {"127.0.0.1:1,127.0.0.1", "no port"},
                                         {"127.0.0.1:1,127.0.0.1:70000", "not in 1..65535"},
                                         {"127.0.0.1:1,127.0.0.1:x", "not in 1..65535"},
                                         {"127.0.0.1:1,::1:2", "[address]:port"},
                                         {"127.0.0.1:1,:2", "no host"},
                                         {"dns:///a.example:1,b.example:2", "only ipv4: and ipv6:"},
                                         {"127.0.0.1:1,no-such-host.invalid:2", "does not resolve"}}) {
    auto t = device::ParseServerTarget(c.server);
    ASSERT_FALSE(t.ok()) << c.server;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.server;
    EXPECT_NE(t.status().message().find(c.message), std::string::npos) << c.server << ": " << t.status();
  }
  // Over TLS, a list of different hosts needs the one name their certificates carry.
  device::GrpcOffloadClientOptions o;
  o.target = "127.0.0.1:1,127.0.0.2:1";
  auto c = device::MakeGrpcOffloadClient(o);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("--server_tls_name"), std::string::npos) << c.status();
  o.tls.server_name = "server";
  EXPECT_TRUE(device::MakeGrpcOffloadClient(o).ok());
  o.max_attempts = 6;
  EXPECT_FALSE(device::MakeGrpcOffloadClient(o).ok());
}

TEST(ServerTargetTest, ServiceConfigAsksForRoundRobinHealthChecksAndRetries) {
  auto j = nlohmann::json::parse(device::OffloadServiceConfig(3));
  EXPECT_EQ(j["loadBalancingConfig"][0].count("round_robin"), 1u);
  EXPECT_EQ(j["healthCheckConfig"]["serviceName"], "");
  EXPECT_EQ(j["methodConfig"][0]["retryPolicy"]["maxAttempts"], 3);
  EXPECT_EQ(j["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"][0], "UNAVAILABLE");
  EXPECT_EQ(nlohmann::json::parse(device::OffloadServiceConfig(1)).count("methodConfig"), 0u);
}

}  // namespace
}  // namespace eenn
