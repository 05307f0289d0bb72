#include "device/edge_engine.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <opencv2/imgcodecs.hpp>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/bundle.h"
#include "common/tensor_image.h"
#include "tests/test_util.h"
#include "tests/tiny_net.h"

namespace eenn::device {
namespace {

// A server stand-in: resumes with the same bundle in-process, or fails as told.
class FakeServer : public OffloadClient {
 public:
  explicit FakeServer(std::shared_ptr<common::Bundle> bundle) : bundle_(std::move(bundle)) {}

  absl::StatusOr<ResumeAnswer> Resume(ResumeCall call, absl::Duration) override {
    ++resume_calls;
    if (gate) gate->WaitForNotification();
    {
      absl::MutexLock lock(&mu_);
      if (!fail_with_.ok()) return fail_with_;
    }
    auto values = common::DecodeTensor(common::View(call.tensor), 1 << 24);
    if (!values.ok()) return values.status();
    torch::Tensor x = torch::from_blob(values->data(), call.tensor.shape).clone();
    auto r = bundle_->model->Run(x, call.split_layer, bundle_->model->num_layers(), bundle_->policy);
    if (!r.ok()) return r.status();
    ResumeAnswer a;
    a.predictions = r->results;
    a.request_bytes = static_cast<int64_t>(call.tensor.data.size()) + 40;
    last_encoding = call.tensor.encoding;
    absl::MutexLock lock(&mu_);
    a.server_load = load_;
    return a;
  }

  absl::StatusOr<RemoteModel> GetModelInfo(absl::Duration) override {
    absl::MutexLock lock(&mu_);
    if (!fail_with_.ok()) return fail_with_;
    RemoteModel m;
    m.name = bundle_->manifest.model_name;
    m.version = version_;
    m.num_layers = bundle_->model->num_layers();
    m.has_load = true;
    m.load = load_;
    return m;
  }

  std::string target() const override { return "fake:1"; }

  void FailWith(absl::Status s) {
    absl::MutexLock lock(&mu_);
    fail_with_ = std::move(s);
  }
  // The load it reports in replies and model info.
  void ReportLoad(ServerLoadReport load) {
    absl::MutexLock lock(&mu_);
    load_ = load;
  }
  void ServeVersion(std::string v) {
    absl::MutexLock lock(&mu_);
    version_ = std::move(v);
  }

  std::atomic<int> resume_calls{0};
  absl::Notification* gate = nullptr;
  common::WireEncoding last_encoding = common::WireEncoding::kFp32;

 private:
  std::shared_ptr<common::Bundle> bundle_;
  absl::Mutex mu_;
  absl::Status fail_with_;
  std::string version_ = "1";
  ServerLoadReport load_;
};

class EdgeEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto net = testing::TinyNet(5);
    ASSERT_NE(net, nullptr);
    auto m = common::DefaultManifest(*net, "tiny", "1");
    m.input.shape = {3, 8, 8};
    m.thresholds = {0.3f, 0.0f};
    ASSERT_TRUE(common::SaveBundle(dir_.path(), m, *net).ok());
    auto b = common::LoadBundle(dir_.path());
    ASSERT_TRUE(b.ok());
    bundle_ = std::make_shared<common::Bundle>(std::move(*b));
    cv::RNG rng(11);
    for (int i = 0; i < 16; ++i) {
      cv::Mat img(8, 8, CV_8UC3);
      rng.fill(img, cv::RNG::UNIFORM, 0, 255);
      images_.push_back(img);
    }
  }

  std::unique_ptr<EdgeEngine> Make(EdgeEngineOptions o, FakeServer** server_out = nullptr) {
    auto server = std::make_unique<FakeServer>(bundle_);
    if (server_out) *server_out = server.get();
    o.probe_interval = absl::Hours(1);  // tests probe explicitly
    auto e = EdgeEngine::Create(dir_.path(), o, std::move(server), nullptr);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? std::move(*e) : nullptr;
  }

  common::ExitResult Local(const cv::Mat& img) {
    auto x = common::ImagesToTensor({img}, bundle_->manifest.input);
    auto r = bundle_->model->Classify(*x, bundle_->policy);
    return (*r)[0];
  }

  ClassifyInput Input(int i) {
    ClassifyInput in;
    in.request_id = "r" + std::to_string(i);
    in.image = images_[i];
    return in;
  }

  testing::TempDir dir_;
  std::shared_ptr<common::Bundle> bundle_;
  std::vector<cv::Mat> images_;
};

TEST_F(EdgeEngineTest, AnswersEqualLocalInferenceAtEverySplit) {
  FakeServer* server;
  auto e = Make({}, &server);
  ASSERT_TRUE(e->server_state().available) << e->server_state().detail;
  for (int split = 0; split <= 4; ++split) {
    ASSERT_TRUE(e->SetSplitLayer(split).ok());
    for (int i = 0; i < 16; ++i) {
      auto r = e->ClassifySync(Input(i));
      ASSERT_TRUE(r.ok()) << r.status();
      auto want = Local(images_[i]);
      EXPECT_EQ(r->result.class_id, want.class_id);
      EXPECT_EQ(r->result.exit_layer, want.exit_layer);
      EXPECT_NEAR(r->result.confidence, want.confidence, 1e-5);
      EXPECT_EQ(r->decided, want.exit_layer < split ? Decision::kDevice : Decision::kServer) << split;
      EXPECT_EQ(r->split_layer, split);
      EXPECT_EQ(r->result.confidences.size(), want.confidences.size());
    }
  }
  EXPECT_FALSE(e->SetSplitLayer(5).ok());
}

TEST_F(EdgeEngineTest, UnreachableServerFallsBackAtOnceAndProbingRestoresOffloading) {
  FakeServer* server;
  EdgeEngineOptions o;
  o.split_layer = 0;  // everything offloaded
  auto e = Make(o, &server);
  server->FailWith(absl::UnavailableError("connection refused"));
  auto r = e->ClassifySync(Input(0));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decided, Decision::kFallback);
  EXPECT_NE(r->fallback_reason.find("connection refused"), std::string::npos);
  EXPECT_EQ(r->result.class_id, Local(images_[0]).class_id);
  EXPECT_FALSE(e->server_state().available);
  const int calls = server->resume_calls.load();
  for (int i = 1; i < 5; ++i) EXPECT_EQ(e->ClassifySync(Input(i))->decided, Decision::kFallback);
  EXPECT_EQ(server->resume_calls.load(), calls);  // no more attempts while it is down
  server->FailWith(absl::OkStatus());
  EXPECT_TRUE(e->ProbeServer().available);
  EXPECT_EQ(e->ClassifySync(Input(1))->decided, Decision::kServer);
}

TEST_F(EdgeEngineTest, OverloadedServerFallsBackButStaysInUse) {
  FakeServer* server;
  EdgeEngineOptions o;
  o.split_layer = 0;
  auto e = Make(o, &server);
  server->FailWith(absl::ResourceExhaustedError("queue full"));
  EXPECT_EQ(e->ClassifySync(Input(0))->decided, Decision::kFallback);
  EXPECT_TRUE(e->server_state().available);
}

TEST_F(EdgeEngineTest, BusyServerIsNotOffloadedToUntilItsLoadFallsAgain) {
  FakeServer* server;
  EdgeEngineOptions o;
  o.split_layer = 0;  // everything offloaded, when it is
  o.server_load.local_factor = 0;  // the budget alone (the comparison with local: the next test)
  auto e = Make(o, &server);
  auto with_deadline = [&](int i) {
    ClassifyInput in = Input(i);
    in.deadline = absl::Now() + absl::Milliseconds(400);  // budget: 200 ms for the server
    return e->ClassifySync(std::move(in));
  };
  // An idle server (the engine's first probe saw an empty queue): offloaded.
  auto r = with_deadline(0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decided, Decision::kServer);
  int calls = server->resume_calls.load();
  EXPECT_EQ(calls, 1);
  // Now 60 requests wait at 100 samples/s: 600 ms before this device's would
  // run. Replies and load reports teach the device that.
  server->ReportLoad({60, 256, 100});
  for (int i = 0; i < 20 && e->server_load().wait_ms < 500; ++i) e->ProbeServer();
  EXPECT_GE(e->server_load().wait_ms, 500);
  EXPECT_EQ(e->server_load().queue_depth, 60);
  // It does the work itself: the server would answer after the budget.
  for (int i = 2; i < 8; ++i) {
    r = with_deadline(i);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->decided, Decision::kFallback);
    EXPECT_NE(r->fallback_reason.find("server busy: expected answer in"), std::string::npos) << r->fallback_reason;
    EXPECT_EQ(r->result.class_id, Local(images_[i]).class_id);
    EXPECT_EQ(r->result.exit_layer, Local(images_[i]).exit_layer);
  }
  EXPECT_EQ(server->resume_calls.load(), calls);
  EXPECT_EQ(e->server_load().declined, 6);
  EXPECT_TRUE(e->server_state().available);  // busy, not down
  // Without a deadline the budget is the offload timeout (1 s): it fits.
  EXPECT_EQ(e->ClassifySync(Input(8))->decided, Decision::kServer);
  EXPECT_EQ(server->resume_calls.load(), ++calls);
  // The queue drains; the monitor's load refreshes (here: explicit probes)
  // bring the estimate down and offloading back.
  server->ReportLoad({0, 256, 100});
  for (int i = 0; i < 20 && e->server_load().expected_ms > 0.8 * 200; ++i) e->ProbeServer();
  r = with_deadline(9);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decided, Decision::kServer);
  EXPECT_EQ(server->resume_calls.load(), ++calls);
}

TEST_F(EdgeEngineTest, QueuedServerSlowerThanTheDeviceIsNotOffloadedTo) {
  FakeServer* server;
  EdgeEngineOptions o;
  o.split_layer = 0;
  auto e = Make(o, &server);
  // An idle server is offloaded to, whatever finishing locally would take.
  ASSERT_EQ(e->ClassifySync(Input(0))->decided, Decision::kServer);
  // 60 requests wait at 100 samples/s: 600 ms, within the 1 s budget of a
  // request without a deadline, but far longer than this device takes to
  // finish the request itself (its warm-up measured that).
  server->ReportLoad({60, 256, 100});
  for (int i = 0; i < 20 && e->server_load().wait_ms < 500; ++i) e->ProbeServer();
  const int calls = server->resume_calls.load();
  const absl::Time start = absl::Now();
  int local = 0;
  for (int i = 1; i < 4; ++i) {
    auto r = e->ClassifySync(Input(i));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->result.class_id, Local(images_[i]).class_id);
    if (r->decided == Decision::kFallback) {
      ++local;
      EXPECT_NE(r->fallback_reason.find("finishing here takes"), std::string::npos) << r->fallback_reason;
    }
  }
  // Offloaded: exploratory ones only, one per 250 ms (the first at once
  // unless the idle offload above was within 250 ms).
  const int explored = server->resume_calls.load() - calls;
  EXPECT_LE(explored, 1 + static_cast<int>((absl::Now() - start) / absl::Milliseconds(250)));
  EXPECT_EQ(local + explored, 3);
  EXPECT_GE(local, 2);
  EXPECT_EQ(e->server_load().declined_local_faster, local);
}

TEST_F(EdgeEngineTest, LoadBlindDeviceOffloadsToABusyServer) {
  FakeServer* server;
  EdgeEngineOptions o;
  o.split_layer = 0;
  o.server_load.enabled = false;
  auto e = Make(o, &server);
  server->ReportLoad({60, 256, 100});
  for (int i = 0; i < 6; ++i) {
    ClassifyInput in = Input(i);
    in.deadline = absl::Now() + absl::Milliseconds(400);
    EXPECT_EQ(e->ClassifySync(std::move(in))->decided, Decision::kServer);
  }
  EXPECT_EQ(server->resume_calls.load(), 6);
  EXPECT_EQ(e->server_load().declined, 0);
}

// A load-blind device marks a server down when an offload runs out of the
// device's own offload timeout, not when the caller's deadline cut it short.
TEST_F(EdgeEngineTest, TimeoutSetByTheCallersDeadlineLeavesTheServerUp) {
  FakeServer* server;
  EdgeEngineOptions o;
  o.split_layer = 0;
  o.server_load.enabled = false;
  o.offload_timeout = absl::Seconds(10);
  auto e = Make(o, &server);
  server->FailWith(absl::DeadlineExceededError("Deadline Exceeded"));
  for (int i = 0; i < 3; ++i) {
    ClassifyInput in = Input(i);
    in.deadline = absl::Now() + absl::Seconds(2);  // the offload gets 1 s, not 10
    auto r = e->ClassifySync(std::move(in));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->decided, Decision::kFallback);
    EXPECT_EQ(r->result.class_id, Local(images_[i]).class_id);
    EXPECT_TRUE(e->server_state().available) << i;
  }
  EXPECT_EQ(server->resume_calls.load(), 3);
  // The device's own timeout: the server is down until a probe finds it.
  auto r = e->ClassifySync(Input(3));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decided, Decision::kFallback);
  EXPECT_FALSE(e->server_state().available);
  EXPECT_EQ(e->ClassifySync(Input(4))->decided, Decision::kFallback);
  EXPECT_EQ(server->resume_calls.load(), 4);
}

TEST_F(EdgeEngineTest, OtherVersionIsNeverOffloadedTo) {
  FakeServer* server;
  EdgeEngineOptions o;
  o.split_layer = 0;
  auto e = Make(o, &server);
  server->ServeVersion("2");
  const ServerState s = e->ProbeServer();
  EXPECT_FALSE(s.available);
  EXPECT_NE(s.detail.find("version '2' but this device serves 'tiny' version '1'"), std::string::npos) << s.detail;
  const int calls = server->resume_calls.load();
  EXPECT_EQ(e->ClassifySync(Input(0))->decided, Decision::kFallback);
  EXPECT_EQ(server->resume_calls.load(), calls);
}

TEST_F(EdgeEngineTest, Int8WireKeepsTheClass) {
  FakeServer* server;
  EdgeEngineOptions o;
  o.split_layer = 1;
  o.wire.encoding = common::WireEncoding::kInt8;
  auto e = Make(o, &server);
  int offloaded = 0;
  for (int i = 0; i < 16; ++i) {
    auto r = e->ClassifySync(Input(i));
    ASSERT_TRUE(r.ok());
    if (r->decided == Decision::kServer) {
      ++offloaded;
      EXPECT_EQ(r->result.class_id, Local(images_[i]).class_id);
    }
  }
  EXPECT_GT(offloaded, 0);
  EXPECT_EQ(server->last_encoding, common::WireEncoding::kInt8);
}

TEST_F(EdgeEngineTest, FullQueueRejectsAndShutdownAnswersEverything) {
  FakeServer* server;
  absl::Notification gate;
  EdgeEngineOptions o;
  o.split_layer = 0;
  o.workers = 1;
  o.queue_capacity = 2;
  auto e = Make(o, &server);
  server->gate = &gate;  // the worker blocks inside the first offload
  std::vector<absl::Status> codes(4, absl::UnknownError("not answered"));
  std::vector<absl::Notification> done(4);
  e->Submit(Input(0), [&](absl::StatusOr<ClassifyOutcome> r) {
    codes[0] = r.status();
    done[0].Notify();
  });
  while (server->resume_calls.load() == 0) absl::SleepFor(absl::Milliseconds(1));
  for (int i = 1; i < 4; ++i) {
    e->Submit(Input(i), [&, i](absl::StatusOr<ClassifyOutcome> r) {
      codes[i] = r.status();
      done[i].Notify();
    });
  }
  ASSERT_TRUE(done[3].HasBeenNotified());
  EXPECT_EQ(codes[3].code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(e->queue_depth(), 2);
  gate.Notify();
  e->Shutdown(absl::Seconds(30));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(done[i].HasBeenNotified());
    EXPECT_TRUE(codes[i].ok()) << codes[i];
  }
}

// The load controller's service sample comes after the reply was handed off,
// with the worker's whole occupancy: here a reply callback that takes 30 ms
// shows in busy_us beyond the timed stages, but not in the worker's CPU time
// (it sleeps); the first request's callback submits one more, which arrives
// during that service.
TEST_F(EdgeEngineTest, ServiceSampleCountsTheWholeOccupancyOfTheWorker) {
  EdgeEngineOptions o;
  o.split_layer = 4;  // all on the device
  o.workers = 1;
  absl::Mutex mu;
  std::vector<ServiceSample> samples;
  o.on_service = [&](const ServiceSample& s) {
    absl::MutexLock lock(&mu);
    samples.push_back(s);
  };
  auto e = Make(o);
  absl::Notification extra_done;
  for (int i = 0; i < 3; ++i) {
    absl::Notification done;
    e->Submit(Input(i), [&, i](absl::StatusOr<ClassifyOutcome> r) {
      EXPECT_TRUE(r.ok()) << r.status();
      if (i == 0) {
        e->Submit(Input(7), [&](absl::StatusOr<ClassifyOutcome> r2) {
          EXPECT_TRUE(r2.ok()) << r2.status();
          extra_done.Notify();
        });
      }
      absl::SleepFor(absl::Milliseconds(30));  // a slow hand-off
      done.Notify();
    });
    done.WaitForNotification();
    if (i == 0) extra_done.WaitForNotification();
  }
  e->Shutdown(absl::Seconds(30));
  absl::MutexLock lock(&mu);
  ASSERT_EQ(samples.size(), 4u);
  const bool computes_alone = at::get_num_threads() == 1;
  for (size_t k = 0; k < samples.size(); ++k) {
    const ServiceSample& s = samples[k];
    EXPECT_FALSE(s.offloaded);
    // The arrival during the first service: exactly one (the next request is
    // sent only after the extra one was answered); during the others at most
    // the next request, sent as soon as the previous callback returned.
    if (k == 0) {
      EXPECT_EQ(s.arrivals, 1);
    } else {
      EXPECT_LE(s.arrivals, 1) << k;
    }
    if (k == 1) continue;  // the extra request, with no slow hand-off
    EXPECT_GE(s.busy_us, s.preprocess_us + s.device_compute_us + 30000);
    EXPECT_LT(s.busy_us, s.preprocess_us + s.device_compute_us + 2000000);
    if (computes_alone) {
      EXPECT_GE(s.cpu_us, 0);
      EXPECT_LE(s.cpu_us, s.busy_us - 25000) << "the sleeping hand-off is not the worker's CPU time";
    } else {
      EXPECT_EQ(s.cpu_us, -1) << "with a LibTorch pool the worker's own CPU time is not the service's work";
    }
  }
}

TEST_F(EdgeEngineTest, BadInputsAreInvalidArgument) {
  auto e = Make({});
  ClassifyInput bytes;
  bytes.image_bytes = "definitely not an image";
  EXPECT_EQ(e->ClassifySync(bytes).status().code(), absl::StatusCode::kInvalidArgument);
  ClassifyInput none;
  EXPECT_EQ(e->ClassifySync(none).status().code(), absl::StatusCode::kInvalidArgument);
  ClassifyInput tensor;
  std::vector<float> v(3 * 4 * 4, 0.1f);
  tensor.tensor = *common::EncodeTensor(v.data(), {1, 3, 4, 4}, {});
  auto r = e->ClassifySync(tensor);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("[1, 3, 8, 8]"), std::string::npos) << r.status();
  ClassifyInput late = Input(0);
  late.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(e->ClassifySync(late).status().code(), absl::StatusCode::kDeadlineExceeded);
  // Still serving.
  EXPECT_TRUE(e->ClassifySync(Input(1)).ok());
}

}  // namespace
}  // namespace eenn::device
