// Collaborative inference with the real binaries on loopback: eenn-server,
// eenn-device and eenn-client (and eenn-infer as the local reference), each
// on ephemeral ports reported through ready files.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <atomic>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <thread>

#include "common/bundle.h"
#include "common/tensor_codec.h"
#include "proto/eenn.grpc.pb.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "proto/wire.h"
#include "tests/integration/daemons.h"
#include "tests/process_util.h"
#include "tests/test_util.h"

namespace eenn {
namespace {

namespace fs = std::filesystem;
using testing::BinPath;
using testing::Process;
using testing::RunCommand;

using testing::Daemon;
using testing::ReadResults;
using testing::RunClient;
using testing::StartDaemon;

class CollabTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    common::ModelSpec spec;
    spec.architecture = "resnet18";
    spec.width = 0.25;
    spec.exit_layers = {4, 7};
    auto net = common::EarlyExitNet::Create(spec);
    ASSERT_TRUE(net.ok());
    testing::Perturb(**net, 21);
    num_layers_ = (*net)->num_layers();
    auto manifest = common::DefaultManifest(**net, "collab-test", "1");
    manifest.class_names = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"};
    manifest.thresholds = {0.25f, 0.25f, 0.0f};
    ASSERT_TRUE(common::SaveBundle(dir_->Join("bundle"), manifest, **net).ok());
    manifest.model_version = "2";
    ASSERT_TRUE(common::SaveBundle(dir_->Join("bundle_v2"), manifest, **net).ok());
    fs::create_directories(dir_->Join("images/c3"));
    cv::RNG rng(7);
    for (int i = 0; i < 24; ++i) {
      cv::Mat m(32 + i % 3, 32, CV_8UC3);  // a few need resizing
      rng.fill(m, cv::RNG::UNIFORM, 0, 255);
      cv::imwrite(dir_->Join("images/c3/img" + std::to_string(i) + ".png"), m);
    }
    // The local reference: eenn-infer over the same files.
    auto r = RunCommand(BinPath("eenn-infer") + " --threads 1 --json --quiet=false --bundle " + dir_->Join("bundle") +
                        " " + dir_->Join("images") + " 2>/dev/null");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    testing::WriteAll(dir_->Join("local.jsonl"), r.out);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void StartServer(Daemon& s, const std::string& bundle = "bundle", std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--bundle=" + dir_->Join(bundle), "--listen=127.0.0.1:0",
                                     "--metrics_address=127.0.0.1:0", "--plaintext"};
    args.insert(args.end(), extra.begin(), extra.end());
    StartDaemon(s, "eenn-server", args, dir_->path(), "server" + std::to_string(counter_++));
  }
  void StartDevice(Daemon& d, const std::string& server_addr, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--bundle=" + dir_->Join("bundle"), "--listen=127.0.0.1:0",
                                     "--metrics_address=127.0.0.1:0", "--server=" + server_addr,
                                     "--plaintext", "--server_plaintext",
                                     // The collaborative path is under test: offload even when
                                     // a queued server is slower than finishing on the device.
                                     "--server_local_factor=0"};
    args.insert(args.end(), extra.begin(), extra.end());
    StartDaemon(d, "eenn-device", args, dir_->path(), "device" + std::to_string(counter_++));
  }
  std::string Results() { return dir_->Join("results" + std::to_string(counter_++) + ".jsonl"); }

  static testing::TempDir* dir_;
  static int num_layers_;
  static std::atomic<int> counter_;
};
testing::TempDir* CollabTest::dir_ = nullptr;
int CollabTest::num_layers_ = 0;
std::atomic<int> CollabTest::counter_{0};

TEST_F(CollabTest, EverySplitMatchesLocalInferenceWithFp32) {
  Daemon server, device;
  StartServer(server);
  StartDevice(device, server.addr(), {"--encoding=fp32"});
  const auto local = ReadResults(dir_->Join("local.jsonl"));
  ASSERT_EQ(local.size(), 24u);
  for (int split = 0; split <= num_layers_; ++split) {
    SCOPED_TRACE("split " + std::to_string(split));
    const std::string results = Results();
    auto summary = RunClient(device.addr(), dir_->Join("images"), results, "--split=" + std::to_string(split));
    EXPECT_EQ(summary["answered"], 24);
    EXPECT_EQ(summary["decided"]["fallback"], 0);
    const auto got = ReadResults(results);
    ASSERT_EQ(got.size(), local.size());
    int on_server = 0;
    for (const auto& [file, want] : local) {
      const auto& g = got.at(file);
      EXPECT_EQ(g["class"], want["class"]) << file;
      EXPECT_EQ(g["exit_layer"], want["exit_layer"]) << file;
      EXPECT_NEAR(g["confidence"].get<double>(), want["confidence"].get<double>(), 1e-4) << file;
      // Exits below the split answer on the device; the rest on the server.
      const bool device_side = want["exit_layer"].get<int>() < split;
      EXPECT_EQ(g["decided"], device_side ? "device" : "server") << file;
      on_server += !device_side;
    }
    if (split == 0) {
      EXPECT_EQ(on_server, 24);
    }
  }
  server.proc.Kill(SIGTERM);
  EXPECT_EQ(server.proc.Wait(), 0);
}

// Mutual TLS on both hops with a throwaway CA made by tools/make-certs.sh (openssl)
// at test time; a second, unrelated CA plays the attacker.
TEST_F(CollabTest, MutualTlsOnBothHopsRefusesUnknownPeers) {
  const std::string make = std::string(EENN_SOURCE_DIR) + "/tools/make-certs.sh ";
  const std::string good = dir_->Join("pki"), rogue = dir_->Join("rogue");
  ASSERT_EQ(RunCommand(make + good + " server device client 2>&1").exit_code, 0);
  ASSERT_EQ(RunCommand(make + rogue + " server client 2>&1").exit_code, 0);
  auto identity = [](const std::string& pki, const std::string& name) {
    return std::vector<std::string>{"--tls_cert=" + pki + "/" + name + ".pem",
                                    "--tls_key=" + pki + "/" + name + ".key"};
  };
  auto join = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::string ca = "--tls_ca=" + good + "/ca.pem";
  const std::vector<std::string> common_args = {"--bundle=" + dir_->Join("bundle"), "--listen=127.0.0.1:0",
                                                "--metrics_address=127.0.0.1:0"};
  Daemon server, device;
  StartDaemon(server, "eenn-server", join(join(common_args, identity(good, "server")), {ca}), dir_->path(),
              "tls_server");
  StartDaemon(device, "eenn-device",
              join(join(common_args, identity(good, "device")),
                   {ca, "--server=" + server.addr(), "--split=1", "--server_local_factor=0"}),
              dir_->path(), "tls_device");
  auto client = [&](const std::string& tls) {
    return RunCommand(BinPath("eenn-client") + " --quiet --json --device=" + device.addr() + " --results=" +
                      Results() + " " + tls + " " + dir_->Join("images") + " 2>&1");
  };
  const std::string good_client = "--tls_cert=" + good + "/client.pem --tls_key=" + good + "/client.key " + ca;

  // mTLS end to end: every request answered, offloads reach the server over TLS.
  auto ok = client(good_client);
  ASSERT_EQ(ok.exit_code, 0) << ok.out;
  auto summary = nlohmann::json::parse(ok.out);
  EXPECT_EQ(summary["answered"], 24);
  EXPECT_GT(summary["decided"]["server"].get<int>(), 0) << summary.dump();
  EXPECT_EQ(summary["decided"]["fallback"], 0);

  // Refused: no client certificate, a certificate from another CA, plaintext.
  for (const std::string& bad : {ca, "--tls_cert=" + rogue + "/client.pem --tls_key=" + rogue + "/client.key " + ca,
                                 std::string("--plaintext")}) {
    SCOPED_TRACE(bad);
    auto r = client(bad);
    EXPECT_NE(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("cannot reach eenn-device"), std::string::npos) << r.out;
  }
  // A client that does not trust the device's CA refuses the device.
  auto distrust = client("--tls_cert=" + good + "/client.pem --tls_key=" + good + "/client.key --tls_ca=" + rogue +
                         "/ca.pem");
  EXPECT_NE(distrust.exit_code, 0) << distrust.out;
  // The device kept serving.
  auto again = client(good_client);
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_EQ(nlohmann::json::parse(again.out)["answered"], 24);

  // A server presenting a certificate from another CA: the device refuses it
  // and answers every request itself (fallback), none lost.
  Daemon impostor, device2;
  StartDaemon(impostor, "eenn-server", join(join(common_args, identity(rogue, "server")), {ca}), dir_->path(),
              "tls_impostor");
  StartDaemon(device2, "eenn-device",
              join(join(common_args, identity(good, "device")),
                   {ca, "--server=" + impostor.addr(), "--split=1", "--offload_timeout_ms=2000"}),
              dir_->path(), "tls_device2");
  auto fb = RunCommand(BinPath("eenn-client") + " --quiet --json --device=" + device2.addr() + " --results=" +
                       Results() + " " + good_client + " " + dir_->Join("images") + " 2>&1");
  ASSERT_EQ(fb.exit_code, 0) << fb.out;
  auto fs = nlohmann::json::parse(fb.out);
  EXPECT_EQ(fs["answered"], 24);
  EXPECT_EQ(fs["decided"]["server"], 0) << fs.dump();
  EXPECT_GT(fs["decided"]["fallback"].get<int>(), 0) << fs.dump();

  // Without certificates and without --plaintext a daemon refuses to start.
  auto bare = RunCommand(BinPath("eenn-server") + " --threads=1 --metrics_address= --listen=127.0.0.1:0 --bundle=" +
                         dir_->Join("bundle") + " 2>&1");
  EXPECT_NE(bare.exit_code, 0);
  EXPECT_NE(bare.out.find("--plaintext"), std::string::npos) << bare.out;
}

TEST_F(CollabTest, Int8AndFp16ShrinkThePayloadAndKeepTheClass) {
  Daemon server, fp32, fp16, int8;
  StartServer(server);
  StartDevice(fp32, server.addr(), {"--encoding=fp32", "--split=3"});
  StartDevice(fp16, server.addr(), {"--encoding=fp16", "--split=3"});
  StartDevice(int8, server.addr(), {"--encoding=int8", "--split=3", "--compression=zstd"});
  auto a = RunClient(fp32.addr(), dir_->Join("images"), Results());
  auto b = RunClient(fp16.addr(), dir_->Join("images"), Results());
  const std::string int8_results = Results();
  auto c = RunClient(int8.addr(), dir_->Join("images"), int8_results);
  ASSERT_GT(a["offloaded"].get<int>(), 0);
  EXPECT_GE(a["bytes_per_offload"].get<double>() / c["bytes_per_offload"].get<double>(), 3.9);
  EXPECT_GE(a["bytes_per_offload"].get<double>() / b["bytes_per_offload"].get<double>(), 1.9);
  const auto local = ReadResults(dir_->Join("local.jsonl"));
  int agree = 0;
  for (const auto& [file, g] : ReadResults(int8_results)) agree += g["class"] == local.at(file)["class"];
  EXPECT_GE(agree, 23);  // random weights: at most one flip allowed here; CIFAR figures in the README
}

TEST_F(CollabTest, ServerKilledMidRunEveryRequestAnsweredThenOffloadingResumes) {
  Daemon server, device;
  StartServer(server);
  StartDevice(device, server.addr(), {"--split=1", "--offload_timeout_ms=2000", "--probe_interval_ms=100"});
  // A long run in the background; the server dies after some requests were offloaded.
  nlohmann::json summary;
  std::thread client([&] {
    summary = RunClient(device.addr(), dir_->Join("images") + " " + dir_->Join("images") + " " + dir_->Join("images") +
                                           " " + dir_->Join("images"),
                        Results(), "--concurrency=2");
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until &&
         testing::MetricValue(testing::HttpGet(device.metrics_port, "/metrics"), "eenn_device_offloads_total") < 5) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  server.proc.Kill(SIGKILL);
  client.join();
  EXPECT_EQ(summary["requests"], 96);
  EXPECT_EQ(summary["answered"], 96) << summary.dump();
  EXPECT_EQ(summary["lost"], 0);
  EXPECT_GE(summary["decided"]["server"].get<int>(), 5);
  EXPECT_GT(summary["decided"]["fallback"].get<int>(), 0) << summary.dump();

  // Restart on the same port: the device notices by itself and offloads again.
  Daemon again;
  StartServer(again, "bundle", {"--listen=127.0.0.1:" + std::to_string(server.grpc_port)});
  nlohmann::json later;
  const auto until2 = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  do {
    later = RunClient(device.addr(), dir_->Join("images"), Results());
  } while (later["decided"]["server"] == 0 && std::chrono::steady_clock::now() < until2);
  EXPECT_GT(later["decided"]["server"].get<int>(), 0) << later.dump();
  EXPECT_EQ(later["answered"], 24);
}

TEST_F(CollabTest, VersionMismatchIsRefusedWithAClearMessage) {
  Daemon server, device;
  StartServer(server, "bundle_v2");
  StartDevice(device, server.addr(), {"--split=1"});
  auto s = RunClient(device.addr(), dir_->Join("images"), Results());
  EXPECT_EQ(s["answered"], 24);
  EXPECT_EQ(s["decided"]["server"], 0);
  const std::string log = device.proc.log();
  EXPECT_NE(log.find("serves model 'collab-test' version '2' but this device serves 'collab-test' version '1'"),
            std::string::npos)
      << log;
  // The server itself refuses a Resume for another version.
  auto channel = grpc::CreateChannel(server.addr(), grpc::InsecureChannelCredentials());
  auto stub = v1::OffloadService::NewStub(channel);
  v1::ResumeRequest req;
  req.set_model_name("collab-test");
  req.set_model_version("1");
  req.set_split_layer(1);
  v1::ResumeReply reply;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Status st = stub->Resume(&ctx, req, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("serves model 'collab-test' version '2'"), std::string::npos)
      << st.error_message();
}

TEST_F(CollabTest, ServerRefusesMalformedResumeRequestsAndKeepsServing) {
  Daemon server;
  StartServer(server);
  auto stub = v1::OffloadService::NewStub(grpc::CreateChannel(server.addr(), grpc::InsecureChannelCredentials()));
  auto bundle = common::LoadBundle(dir_->Join("bundle"));
  ASSERT_TRUE(bundle.ok());
  const int split = 3;
  std::vector<int64_t> shape = bundle->model->LayerInputShape(split);
  shape.insert(shape.begin(), 1);
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<float> values(static_cast<size_t>(n), 0.5f);
  auto make = [&](common::WireEncoding e) {
    v1::ResumeRequest req;
    req.set_model_name("collab-test");
    req.set_model_version("1");
    req.set_split_layer(split);
    auto t = common::EncodeTensor(values.data(), shape, {e});
    wire::ToProto(std::move(*t), req.mutable_tensor());
    return req;
  };
  auto call = [&](const v1::ResumeRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ResumeReply reply;
    return stub->Resume(&ctx, req, &reply);
  };
  struct Case {
    std::string name;
    std::function<void(v1::ResumeRequest&)> mutate;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases = {
      {"split too large", [](auto& r) { r.set_split_layer(99); }, grpc::StatusCode::INVALID_ARGUMENT, "out of range"},
      {"negative split", [](auto& r) { r.set_split_layer(-1); }, grpc::StatusCode::INVALID_ARGUMENT, "out of range"},
      {"wrong shape", [](auto& r) { r.mutable_tensor()->set_shape(1, 5); }, grpc::StatusCode::INVALID_ARGUMENT,
       "does not match the input of layer 3"},
      {"negative dim", [](auto& r) { r.mutable_tensor()->set_shape(0, -2); }, grpc::StatusCode::INVALID_ARGUMENT,
       "batch dimension"},
      {"short data", [](auto& r) { r.mutable_tensor()->mutable_data()->resize(10); },
       grpc::StatusCode::INVALID_ARGUMENT, "bytes"},
      {"byte count", [](auto& r) { r.mutable_tensor()->set_encoded_size(12); }, grpc::StatusCode::INVALID_ARGUMENT,
       "encoded_size"},
      {"dtype", [](auto& r) { r.mutable_tensor()->set_dtype(v1::DTYPE_UNSPECIFIED); },
       grpc::StatusCode::INVALID_ARGUMENT, "dtype"},
      {"encoding", [](auto& r) { r.mutable_tensor()->set_encoding(static_cast<v1::Encoding>(9)); },
       grpc::StatusCode::INVALID_ARGUMENT, "encoding"},
      {"NaN", [](auto& r) { float nan = std::nanf(""); std::memcpy(r.mutable_tensor()->mutable_data()->data(), &nan, 4); },
       grpc::StatusCode::INVALID_ARGUMENT, "not finite"},
      {"no tensor", [](auto& r) { r.clear_tensor(); }, grpc::StatusCode::INVALID_ARGUMENT, "no tensor"},
      {"model name", [](auto& r) { r.set_model_name("other"); }, grpc::StatusCode::FAILED_PRECONDITION, "serves model"},
  };
  for (const auto& c : cases) {
    v1::ResumeRequest req = make(common::WireEncoding::kFp32);
    c.mutate(req);
    grpc::Status s = call(req);
    EXPECT_EQ(s.error_code(), c.code) << c.name << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(c.message), std::string::npos) << c.name << ": " << s.error_message();
  }
  for (auto e : {common::WireEncoding::kFp32, common::WireEncoding::kFp16, common::WireEncoding::kInt8}) {
    EXPECT_TRUE(call(make(e)).ok()) << "valid request after the bad ones";
  }
}

TEST_F(CollabTest, MetricsPassPromtoolAndCountEveryRequest) {
  Daemon server, device;
  StartServer(server);
  StartDevice(device, server.addr(), {"--split=3"});
  auto s = RunClient(device.addr(), dir_->Join("images"), Results());
  ASSERT_EQ(s["answered"], 24);
  const std::string dm = testing::HttpGet(device.metrics_port, "/metrics");
  const std::string sm = testing::HttpGet(server.metrics_port, "/metrics");
  ASSERT_FALSE(dm.empty());
  ASSERT_FALSE(sm.empty());
  for (const auto& [name, text] : {std::pair{"device", dm}, std::pair{"server", sm}}) {
    testing::WriteAll(dir_->Join(std::string(name) + ".prom"), text);
    auto r = RunCommand("promtool check metrics < " + dir_->Join(std::string(name) + ".prom") + " 2>&1");
    EXPECT_EQ(r.exit_code, 0) << name << ":\n" << r.out;
  }
  EXPECT_EQ(testing::MetricValue(dm, "eenn_device_stage_duration_seconds_count{stage=\"end_to_end\"}"), 24);
  EXPECT_EQ(testing::MetricValue(dm, "eenn_device_stage_duration_seconds_count{stage=\"preprocess\"}"), 24);
  const double offloaded = s["decided"]["server"].get<double>();
  EXPECT_GT(offloaded, 0);
  EXPECT_EQ(testing::MetricValue(dm, "eenn_device_stage_duration_seconds_count{stage=\"offload_rpc\"}"), offloaded);
  EXPECT_EQ(testing::MetricValue(sm, "eenn_server_stage_duration_seconds_count{stage=\"total\"}"), offloaded);
  EXPECT_EQ(testing::MetricValue(sm, "eenn_server_requests_total{code=\"OK\"}"), offloaded);
  EXPECT_EQ(testing::MetricValue(dm, "eenn_device_requests_total{code=\"OK\",outcome=\"server\"}"), offloaded);
  EXPECT_EQ(testing::MetricValue(dm, "eenn_device_split_layer"), 3);
  // The workers' busy time covers each request's time out of the queue
  // (end to end less queue wait) plus the reply hand-off, a little more.
  const double in_service = testing::MetricValue(dm, "eenn_device_stage_duration_seconds_sum{stage=\"end_to_end\"}") -
                            testing::MetricValue(dm, "eenn_device_stage_duration_seconds_sum{stage=\"queue\"}");
  const double busy = testing::MetricValue(dm, "eenn_device_worker_busy_seconds_total");
  EXPECT_GE(busy, 0.999 * in_service);
  EXPECT_LT(busy, in_service + 24 * 0.05);
  // The workers' own CPU time is part of their busy time; the arrivals seen
  // while busy are at most every request once per worker.
  const double cpu = testing::MetricValue(dm, "eenn_device_worker_cpu_seconds_total");
  EXPECT_GT(cpu, 0);
  EXPECT_LE(cpu, busy * 1.001 + 0.01);
  const double while_busy = testing::MetricValue(dm, "eenn_device_arrivals_while_busy_total");
  EXPECT_GE(while_busy, 0);
  EXPECT_LE(while_busy, 2 * 24);  // the device runs 2 workers
}

// Live planning: eenn-profile's real profile of the test bundle, with the
// device's layers made 100x slower and the server's 100x faster (as a weak
// edge board next to a strong server would measure), so offloading
// everything is clearly best on loopback. The device starts all-on-device and
// must move the split to the plan's best on its own; PlannerService answers
// current and what-if plans (eenn-plan --device).
TEST_F(CollabTest, LivePlannerMovesTheSplitAndAnswersPlanQueries) {
  auto r = RunCommand(BinPath("eenn-profile") + " --threads 1 --samples 10 --warmup 2 --wire_samples 2 --quiet" +
                      " --bundle " + dir_->Join("bundle") + " --images " + dir_->Join("images") + " --out " +
                      dir_->Join("profile") + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto profile = nlohmann::json::parse(testing::ReadAll(dir_->Join("profile/profile_summary.json")));
  ASSERT_TRUE(profile.contains("backbone_execution_time"));
  ASSERT_EQ(profile["eenn"]["layers"].size(), static_cast<size_t>(num_layers_));
  auto scaled = [&](double factor) {
    nlohmann::json p = profile;
    for (auto& l : p["eenn"]["layers"]) l["ms"]["mean"] = l["ms"]["mean"].get<double>() * factor;
    return p;
  };
  testing::WriteAll(dir_->Join("profile/device.json"), scaled(100).dump());
  testing::WriteAll(dir_->Join("profile/server.json"), scaled(0.01).dump());

  Daemon server, device;
  StartServer(server);
  StartDevice(device, server.addr(),
              {"--split=" + std::to_string(num_layers_), "--device_profile=" + dir_->Join("profile/device.json"),
               "--server_profile=" + dir_->Join("profile/server.json"), "--plan_interval_ms=100",
               "--plan_dwell_ms=0"});
  // Moves within a few planning rounds, with no client traffic (probes only).
  double split = num_layers_;
  for (int i = 0; i < 100 && split == num_layers_; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    split = testing::MetricValue(testing::HttpGet(device.metrics_port, "/metrics"), "eenn_device_split_layer");
  }
  EXPECT_LT(split, num_layers_) << device.proc.log();
  const std::string dm = testing::HttpGet(device.metrics_port, "/metrics");
  EXPECT_GE(testing::MetricValue(dm, "eenn_device_split_changes_total"), 1);
  EXPECT_GT(testing::MetricValue(dm, "eenn_device_link_bandwidth_bytes_per_second"), 0);
  EXPECT_GT(testing::MetricValue(dm, "eenn_device_link_rtt_seconds"), 0);
  // Prometheus naming (base units) holds for the planner's metrics too.
  testing::WriteAll(dir_->Join("planner.prom"), dm);
  auto lint = RunCommand("promtool check metrics < " + dir_->Join("planner.prom") + " 2>&1");
  EXPECT_EQ(lint.exit_code, 0) << lint.out;

  auto q = RunCommand(BinPath("eenn-plan") + " --plaintext --json --device " + device.addr() + " 2>&1");
  ASSERT_EQ(q.exit_code, 0) << q.out;
  auto plan = nlohmann::json::parse(q.out, nullptr, false);
  ASSERT_FALSE(plan.is_discarded()) << q.out;
  EXPECT_EQ(plan["candidates"].size(), static_cast<size_t>(num_layers_ + 1));
  EXPECT_EQ(plan["current_split"].get<int>(), static_cast<int>(split));
  EXPECT_EQ(plan["best_split"].get<int>(), static_cast<int>(split));
  EXPECT_FALSE(plan["hypothetical"].get<bool>());
  EXPECT_GT(plan["round_trips"].get<int>(), 0);
  for (const auto& c : plan["candidates"]) {
    for (const char* k : {"split", "expected_ms", "bytes", "offload_share"}) EXPECT_TRUE(c.contains(k)) << k;
  }
  // What if the link were a trickle: keep everything on the device.
  auto w = RunCommand(BinPath("eenn-plan") + " --plaintext --json --what_if_bandwidth_mbps 0.0001 --device " + device.addr());
  ASSERT_EQ(w.exit_code, 0) << w.out;
  auto trickle = nlohmann::json::parse(w.out);
  EXPECT_TRUE(trickle["hypothetical"].get<bool>());
  EXPECT_EQ(trickle["best_split"].get<int>(), num_layers_);
  EXPECT_DOUBLE_EQ(trickle["bandwidth_mbps"].get<double>(), 0.0001);

  // Requests keep being answered correctly while the planner runs.
  auto s = RunClient(device.addr(), dir_->Join("images"), Results());
  EXPECT_EQ(s["answered"], 24);
  EXPECT_EQ(s["decided"]["fallback"], 0);
  // A device without profiles has no PlannerService.
  Daemon plain;
  StartDevice(plain, server.addr());
  auto none = RunCommand(BinPath("eenn-plan") + " --plaintext --device " + plain.addr() + " 2>&1");
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.out.find("UNIMPLEMENTED"), std::string::npos) << none.out;
}

TEST_F(CollabTest, StreamsAnswerEveryMessageAndReportBadOnesInline) {
  Daemon server, device;
  StartServer(server);
  StartDevice(device, server.addr(), {"--split=1"});
  // ClassifyStream on the device: 8 images and 2 bad messages, replies matched by request_id.
  auto edge = v1::EdgeService::NewStub(grpc::CreateChannel(device.addr(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = edge->ClassifyStream(&ctx);
  const auto local = ReadResults(dir_->Join("local.jsonl"));
  std::map<std::string, std::string> sent;  // request_id -> file
  int i = 0;
  for (const auto& [file, want] : local) {
    if (i == 8) break;
    v1::ClassifyRequest req;
    req.set_request_id("img" + std::to_string(i++));
    req.set_image(testing::ReadAll(file));
    sent[req.request_id()] = file;
    ASSERT_TRUE(stream->Write(req));
  }
  v1::ClassifyRequest bad;
  bad.set_request_id("bad-image");
  bad.set_image("not an image");
  ASSERT_TRUE(stream->Write(bad));
  bad.Clear();
  bad.set_request_id("no-input");
  ASSERT_TRUE(stream->Write(bad));
  stream->WritesDone();
  v1::ClassifyReply reply;
  int answered = 0, errors = 0;
  while (stream->Read(&reply)) {
    if (reply.has_error()) {
      ++errors;
      EXPECT_EQ(reply.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) << reply.request_id();
      EXPECT_TRUE(reply.request_id() == "bad-image" || reply.request_id() == "no-input") << reply.request_id();
      continue;
    }
    ++answered;
    const auto& want = local.at(sent.at(reply.request_id()));
    EXPECT_EQ(reply.class_id(), want["class"].get<int64_t>());
    EXPECT_NEAR(reply.confidence(), want["confidence"].get<double>(), 1e-4);
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(answered, 8);
  EXPECT_EQ(errors, 2);

  // ResumeStream on the server: valid and invalid messages on one stream.
  auto off = v1::OffloadService::NewStub(grpc::CreateChannel(server.addr(), grpc::InsecureChannelCredentials()));
  auto bundle = common::LoadBundle(dir_->Join("bundle"));
  ASSERT_TRUE(bundle.ok());
  std::vector<int64_t> shape = bundle->model->LayerInputShape(2);
  shape.insert(shape.begin(), 2);
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<float> values(static_cast<size_t>(n), 0.25f);
  grpc::ClientContext ctx2;
  ctx2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto rs = off->ResumeStream(&ctx2);
  for (int k = 0; k < 5; ++k) {
    v1::ResumeRequest req;
    req.set_request_id("r" + std::to_string(k));
    req.set_model_name("collab-test");
    req.set_model_version("1");
    req.set_split_layer(k == 4 ? 77 : 2);
    wire::ToProto(std::move(*common::EncodeTensor(values.data(), shape, {})), req.mutable_tensor());
    ASSERT_TRUE(rs->Write(req));
  }
  rs->WritesDone();
  v1::ResumeReply rr;
  int ok = 0, bad_split = 0;
  while (rs->Read(&rr)) {
    if (rr.has_error()) {
      ++bad_split;
      EXPECT_EQ(rr.request_id(), "r4");
      EXPECT_NE(rr.error().message().find("out of range"), std::string::npos);
    } else {
      ++ok;
      EXPECT_EQ(rr.predictions_size(), 2);
    }
  }
  const grpc::Status finished = rs->Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_code() << " " << finished.error_message() << "\n" << server.proc.log();
  EXPECT_EQ(ok, 4);
  EXPECT_EQ(bad_split, 1);
}

TEST_F(CollabTest, LocalFolderSourceClassifiesEveryImage) {
  const std::string out = dir_->Join("source.jsonl");
  auto r = RunCommand(BinPath("eenn-device") + " --threads=1 --listen= --metrics_address= --bundle=" +
                      dir_->Join("bundle") + " --source=folder:" + dir_->Join("images") + " --source_output=" + out +
                      " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto local = ReadResults(dir_->Join("local.jsonl"));
  std::istringstream in(testing::ReadAll(out));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["class"], local.at(j["source"].get<std::string>())["class"]);
    EXPECT_EQ(j["exit_layer"], local.at(j["source"].get<std::string>())["exit_layer"]);
    EXPECT_NE(j["decided"], "server");  // no server configured: the device finishes locally
    ++n;
  }
  EXPECT_EQ(n, 24);
  EXPECT_NE(r.out.find("24 items, 24 answered, 0 failed"), std::string::npos) << r.out;
}

TEST_F(CollabTest, SigtermDrainsAndExitsZero) {
  Daemon server, device;
  StartServer(server);
  StartDevice(device, server.addr());
  // Both report SERVING on the standard health service once ready.
  for (const Daemon* d : {&server, &device}) {
    auto health = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(d->addr(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  device.proc.Signal(SIGTERM);
  server.proc.Signal(SIGTERM);
  EXPECT_EQ(device.proc.Wait(), 0) << device.proc.log();
  EXPECT_EQ(server.proc.Wait(), 0) << server.proc.log();
}

}  // namespace
}  // namespace eenn
