#include "server/offload_engine.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <prometheus/registry.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/bundle.h"
#include "server/metrics.h"
#include "tests/test_util.h"
#include "tests/tiny_net.h"

namespace eenn::server {
namespace {

// test_tiny with its layer 1 (a ReLU) replaced by `layer1`, registered as
// `name`. That layer runs as given (it is not lowered onto oneDNN).
void RegisterTinyVariant(const std::string& name, std::function<torch::Tensor(const torch::Tensor&)> layer1) {
  auto s = common::RegisterBackbone(name, [layer1](const common::BackboneOptions&) {
    namespace nn = torch::nn;
    common::Backbone b;
    b.layers.push_back(common::MakeLayer(nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1)), "Conv2d", 8));
    common::BackboneLayer custom = common::MakeLayer(nn::ReLU(), "ReLU", 8);
    custom.forward = layer1;
    custom.lower = [] { return common::LayerLowering(); };  // the dense forward above
    b.layers.push_back(std::move(custom));
    b.layers.push_back(common::MakeLayer(nn::Conv2d(nn::Conv2dOptions(8, 8, 3).padding(1)), "Conv2d", 8));
    b.layers.push_back(common::MakeLayer(nn::ReLU(), "ReLU", 8));
    b.head = common::HeadConfig{common::HeadKind::kPoolLinear, 0, 0.0};
    b.input_shape = {3, 8, 8};
    return absl::StatusOr<common::Backbone>(std::move(b));
  });
  (void)s;  // already registered by an earlier test
}

// "test_faulty" throws on an input above 1e6, so a test can make one forward fail.
void RegisterFaultyBackbone() {
  RegisterTinyVariant("test_faulty", [](const torch::Tensor& x) {
    TORCH_CHECK(x.max().item<float>() < 1e6f, "test_faulty: poisoned input");
    return torch::relu(x);
  });
}

// "test_slow" sleeps 5 ms in every forward: forwards of a known length that
// overlap on any machine, however loaded.
void RegisterSlowBackbone() {
  RegisterTinyVariant("test_slow", [](const torch::Tensor& x) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return torch::relu(x);
  });
}

// Saves a bundle of the registered backbone `arch` (exit at layer 1) in `dir`.
void SaveVariantBundle(const std::string& arch, const std::string& dir) {
  common::ModelSpec spec;
  spec.architecture = arch;
  spec.exit_layers = {1};
  auto net = common::EarlyExitNet::Create(spec);
  ASSERT_TRUE(net.ok()) << net.status();
  ASSERT_TRUE(common::SaveBundle(dir, common::DefaultManifest(**net, arch, "1"), **net).ok());
}

class OffloadEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto net = testing::TinyNet(3);
    ASSERT_NE(net, nullptr);
    auto m = common::DefaultManifest(*net, "tiny", "7");
    m.thresholds = {0.3f, 0.0f};
    ASSERT_TRUE(common::SaveBundle(dir_.path(), m, *net).ok());
    auto b = common::LoadBundle(dir_.path());
    ASSERT_TRUE(b.ok());
    bundle_ = std::make_unique<common::Bundle>(std::move(*b));
  }

  std::unique_ptr<OffloadEngine> Make(OffloadEngineOptions o) {
    auto e = OffloadEngine::Create(dir_.path(), o, nullptr);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? std::move(*e) : nullptr;
  }

  ResumeJob Job(int split, int n, uint64_t seed) {
    torch::manual_seed(seed);
    std::vector<int64_t> shape = bundle_->model->LayerInputShape(split);
    shape.insert(shape.begin(), n);
    torch::Tensor x = torch::rand(shape);
    ResumeJob j;
    j.split_layer = split;
    j.shape = shape;
    j.values.assign(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
    return j;
  }

  std::vector<common::ExitResult> Direct(const ResumeJob& j) {
    torch::Tensor x = torch::from_blob(const_cast<float*>(j.values.data()), j.shape).clone();
    auto r = bundle_->model->Run(x, j.split_layer, bundle_->model->num_layers(), bundle_->policy);
    EXPECT_TRUE(r.ok());
    return r->results;
  }

  testing::TempDir dir_;
  std::unique_ptr<common::Bundle> bundle_;
};

TEST_F(OffloadEngineTest, ValidateShapeNamesWhatIsWrong) {
  auto e = Make({});
  EXPECT_TRUE(e->ValidateShape(2, {3, 8, 8, 8}).ok());
  EXPECT_NE(e->ValidateShape(4, {1, 8, 8, 8}).message().find("out of range"), std::string::npos);
  EXPECT_NE(e->ValidateShape(-1, {1, 8, 8, 8}).message().find("out of range"), std::string::npos);
  EXPECT_NE(e->ValidateShape(2, {1, 3, 8, 8}).message().find("expected [n, 8, 8, 8]"), std::string::npos);
  EXPECT_NE(e->ValidateShape(2, {1, 8, 8}).message().find("does not match"), std::string::npos);
  EXPECT_NE(e->ValidateShape(2, {0, 8, 8, 8}).message().find("batch dimension"), std::string::npos);
  // max_request_samples defaults to max_batch_size (32).
  EXPECT_TRUE(e->ValidateShape(2, {32, 8, 8, 8}).ok());
  EXPECT_NE(e->ValidateShape(2, {33, 8, 8, 8}).message().find("1..32"), std::string::npos);
  EXPECT_EQ(e->model().name, "tiny");
  EXPECT_EQ(e->model().version, "7");
}

TEST_F(OffloadEngineTest, ConcurrentJobsWithTheSameSplitShareOneBatchAndMatchDirectRuns) {
  OffloadEngineOptions o;
  // A batch of exactly the three split-1 jobs' 6 samples runs as soon as it is
  // full; the long hold only makes sure they meet even on a slow machine (or
  // under a sanitizer), and costs the lone split-2 job its wait.
  o.max_batch_size = 6;
  o.max_queue_delay = absl::Milliseconds(2000);
  auto e = Make(o);
  std::vector<ResumeJob> jobs = {Job(1, 2, 1), Job(1, 1, 2), Job(1, 3, 3), Job(2, 1, 4)};
  std::vector<absl::StatusOr<ResumeResult>> got(jobs.size(), absl::UnknownError("not answered"));
  std::vector<absl::Notification> done(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    e->Submit(jobs[i], [&, i](absl::StatusOr<ResumeResult> r) {
      got[i] = std::move(r);
      done[i].Notify();
    });
  }
  for (auto& d : done) d.WaitForNotification();
  for (size_t i = 0; i < jobs.size(); ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status();
    auto want = Direct(jobs[i]);
    ASSERT_EQ(got[i]->predictions.size(), want.size());
    for (size_t k = 0; k < want.size(); ++k) {
      EXPECT_EQ(got[i]->predictions[k].class_id, want[k].class_id);
      EXPECT_EQ(got[i]->predictions[k].exit_layer, want[k].exit_layer);
      EXPECT_NEAR(got[i]->predictions[k].confidence, want[k].confidence, 1e-5);
    }
  }
  // The three split-1 jobs arrived within the hold window: one forward of 6 samples.
  EXPECT_EQ(got[0]->batch_size, 6);
  EXPECT_EQ(got[1]->batch_size, 6);
  EXPECT_EQ(got[2]->batch_size, 6);
  EXPECT_EQ(got[3]->batch_size, 1);  // never mixed with another split
}

TEST_F(OffloadEngineTest, FullQueueRefusesWithResourceExhaustedAndShutdownFailsTheRest) {
  OffloadEngineOptions o;
  o.queue_capacity = 2;
  o.max_batch_size = 64;
  o.max_queue_delay = absl::Seconds(30);  // the executor holds the queue
  auto e = Make(o);
  std::vector<absl::Status> codes(3, absl::UnknownError("not answered"));
  std::vector<absl::Notification> done(3);
  for (int i = 0; i < 3; ++i) {
    e->Submit(Job(1, 1, i), [&, i](absl::StatusOr<ResumeResult> r) {
      codes[i] = r.status();
      done[i].Notify();
    });
  }
  ASSERT_TRUE(done[2].HasBeenNotified());  // refused inline
  EXPECT_EQ(codes[2].code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(e->Load().queue_depth, 2);
  e->Shutdown(absl::ZeroDuration());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(done[i].HasBeenNotified());
    EXPECT_EQ(codes[i].code(), absl::StatusCode::kUnavailable);
  }
  absl::Status after;
  e->Submit(Job(1, 1, 9), [&](absl::StatusOr<ResumeResult> r) { after = r.status(); });
  EXPECT_EQ(after.code(), absl::StatusCode::kUnavailable);
}

TEST_F(OffloadEngineTest, ExpiredDeadlineIsNotRun) {
  auto e = Make({});
  ResumeJob j = Job(1, 1, 5);
  j.deadline = absl::Now() - absl::Milliseconds(1);
  absl::Notification done;
  absl::Status s;
  e->Submit(j, [&](absl::StatusOr<ResumeResult> r) {
    s = r.status();
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(OffloadEngineTest, ShutdownDrainsQueuedWork) {
  OffloadEngineOptions o;
  o.max_queue_delay = absl::Milliseconds(50);
  auto e = Make(o);
  std::vector<absl::Status> codes(5, absl::UnknownError("not answered"));
  for (int i = 0; i < 5; ++i) {
    e->Submit(Job(1 + i % 2, 1, i), [&, i](absl::StatusOr<ResumeResult> r) { codes[i] = r.status(); });
  }
  e->Shutdown(absl::Seconds(30));
  for (const auto& c : codes) EXPECT_TRUE(c.ok()) << c;
}

TEST_F(OffloadEngineTest, MaxBatchSizeIsAHardLimit) {
  OffloadEngineOptions o;
  o.max_batch_size = 4;
  o.max_request_samples = 8;  // would run as one forward of 8
  auto refused = OffloadEngine::Create(dir_.path(), o, nullptr);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("max_request_samples (8) exceeds max_batch_size (4)"),
            std::string::npos)
      << refused.status();
  o.max_request_samples = 0;  // = max_batch_size
  auto e = Make(o);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->options().max_request_samples, 4);
  EXPECT_TRUE(e->ValidateShape(1, {4, 8, 8, 8}).ok());
  EXPECT_EQ(e->ValidateShape(1, {5, 8, 8, 8}).code(), absl::StatusCode::kInvalidArgument);
  // Jobs of 3 + 3 samples never share a forward of 4.
  o.max_queue_delay = absl::Milliseconds(200);
  e = Make(o);
  std::vector<absl::StatusOr<ResumeResult>> got(2, absl::UnknownError("not answered"));
  std::vector<absl::Notification> done(2);
  for (int i = 0; i < 2; ++i) {
    e->Submit(Job(1, 3, i), [&, i](absl::StatusOr<ResumeResult> r) {
      got[i] = std::move(r);
      done[i].Notify();
    });
  }
  for (int i = 0; i < 2; ++i) {
    done[i].WaitForNotification();
    ASSERT_TRUE(got[i].ok()) << got[i].status();
    EXPECT_EQ(got[i]->batch_size, 3);
  }
}

TEST_F(OffloadEngineTest, AdmissionHoldsAQueuePlaceUntilSubmittedOrDropped) {
  OffloadEngineOptions o;
  o.queue_capacity = 2;
  o.max_queue_delay = absl::Seconds(30);  // the executor holds the queue
  auto e = Make(o);
  auto a1 = e->Admit(1, {1, 8, 8, 8});
  auto a2 = e->Admit(1, {1, 8, 8, 8});
  ASSERT_TRUE(a1.ok() && a2.ok());
  auto full = e->Admit(1, {1, 8, 8, 8});
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  EXPECT_EQ(e->Admit(9, {1, 8, 8, 8}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status refused;
  e->Submit(Job(1, 1, 1), [&](absl::StatusOr<ResumeResult> r) { refused = r.status(); });
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);  // inline
  { auto dropped = std::move(*a2); }  // an admission dropped unused gives its place back
  auto a3 = e->Admit(1, {1, 8, 8, 8});
  ASSERT_TRUE(a3.ok()) << a3.status();
  std::vector<absl::Status> codes(2, absl::UnknownError("not answered"));
  e->Submit(std::move(*a1), Job(1, 1, 2), [&](absl::StatusOr<ResumeResult> r) { codes[0] = r.status(); });
  EXPECT_EQ(e->Load().queue_depth, 1);
  EXPECT_EQ(e->Admit(1, {1, 8, 8, 8}).status().code(), absl::StatusCode::kResourceExhausted);
  e->Shutdown(absl::ZeroDuration());
  EXPECT_EQ(codes[0].code(), absl::StatusCode::kUnavailable);
  // Admitted before the shutdown, submitted after: refused, its place given back.
  e->Submit(std::move(*a3), Job(1, 1, 3), [&](absl::StatusOr<ResumeResult> r) { codes[1] = r.status(); });
  EXPECT_EQ(codes[1].code(), absl::StatusCode::kUnavailable);
}

TEST_F(OffloadEngineTest, QueuedBytesAreBounded) {
  OffloadEngineOptions o;
  o.max_batch_size = 8;  // a queued job of 4 samples waits for more
  o.max_request_samples = 4;
  o.max_queue_delay = absl::Seconds(30);
  const int64_t per_sample = 8 * 8 * 8 * sizeof(float);  // the largest layer input of test_tiny
  // Below one request of 4 samples at the widest split: such requests could never run.
  o.max_queued_bytes = 4 * per_sample - 1;
  auto refused = OffloadEngine::Create(dir_.path(), o, nullptr);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("max_queued_bytes"), std::string::npos) << refused.status();
  o.max_queued_bytes = 5 * per_sample;
  auto e = Make(o);
  auto big = e->Admit(1, {4, 8, 8, 8});
  ASSERT_TRUE(big.ok()) << big.status();
  auto over = e->Admit(1, {2, 8, 8, 8});
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("max_queued_bytes"), std::string::npos) << over.status();
  EXPECT_EQ(e->Load().queue_depth, 0);  // requests waiting, not bytes
  auto small = e->Admit(1, {1, 8, 8, 8});
  ASSERT_TRUE(small.ok()) << small.status();
  // Queued jobs keep their bytes until an executor takes them.
  absl::Status queued;
  e->Submit(std::move(*big), Job(1, 4, 1), [&](absl::StatusOr<ResumeResult> r) { queued = r.status(); });
  EXPECT_EQ(e->Admit(1, {1, 8, 8, 8}).status().code(), absl::StatusCode::kResourceExhausted);
  e->Shutdown(absl::ZeroDuration());
  EXPECT_EQ(queued.code(), absl::StatusCode::kUnavailable);
}

TEST_F(OffloadEngineTest, FailedForwardsAreNotCountedAsResumedSamples) {
  RegisterFaultyBackbone();
  testing::TempDir dir;
  SaveVariantBundle("test_faulty", dir.path());
  prometheus::Registry registry;
  ServerMetrics metrics(registry, "test_faulty", "1", {1});
  OffloadEngineOptions o;
  o.max_queue_delay = absl::ZeroDuration();
  auto e = OffloadEngine::Create(dir.path(), o, &metrics);
  ASSERT_TRUE(e.ok()) << e.status();
  auto run = [&](ResumeJob j) {
    absl::Notification done;
    absl::Status s;
    (*e)->Submit(std::move(j), [&](absl::StatusOr<ResumeResult> r) {
      s = r.status();
      done.Notify();
    });
    done.WaitForNotification();
    return s;
  };
  ResumeJob poisoned = Job(1, 3, 1);
  poisoned.values[0] = 1e7f;
  EXPECT_EQ(run(std::move(poisoned)).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(metrics.samples->Value(), 0);
  EXPECT_EQ(metrics.batch_size->Collect().histogram.sample_count, 0u);
  EXPECT_EQ((*e)->Load().service_rate, 0);
  ASSERT_TRUE(run(Job(1, 2, 2)).ok());
  EXPECT_EQ(metrics.samples->Value(), 2);
  EXPECT_EQ(metrics.batch_size->Collect().histogram.sample_count, 1u);
  EXPECT_GT((*e)->Load().service_rate, 0);  // counted before the job was answered
}

// service_rate is the server's throughput, all executors together, not one
// executor's samples per second of its own forward.
// service_rate is the server's throughput, all executors together, not one
// executor's samples per second of its own forward (half of it here).
TEST_F(OffloadEngineTest, ServiceRateIsTheThroughputOfAllExecutors) {
  RegisterSlowBackbone();
  testing::TempDir dir;
  SaveVariantBundle("test_slow", dir.path());
  OffloadEngineOptions o;
  o.executors = 2;
  o.max_batch_size = 8;  // one job per forward
  o.max_queue_delay = absl::ZeroDuration();
  o.warmup = false;
  auto e = OffloadEngine::Create(dir.path(), o, nullptr);
  ASSERT_TRUE(e.ok()) << e.status();
  constexpr int kSamples = 8;
  const ResumeJob job = Job(1, kSamples, 100);
  absl::Mutex mu;
  int submitted = 0, answered = 0, failed = 0;
  absl::Time last = absl::InfinitePast();
  // Jobs always waiting, so both executors stay busy, for two rate windows
  // (the rate then comes from a finished window).
  const absl::Time start = absl::Now();
  const absl::Time until = start + 2 * OffloadEngine::kServiceRateWindow;
  while (absl::Now() < until) {
    {
      absl::MutexLock lock(&mu);
      auto room = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return submitted - answered < 6; };
      mu.Await(absl::Condition(&room));
      ++submitted;
    }
    (*e)->Submit(job, [&](absl::StatusOr<ResumeResult> r) {
      absl::MutexLock lock(&mu);
      ++answered;
      failed += r.ok() ? 0 : 1;
      last = std::max(last, absl::Now());
    });
  }
  {
    absl::MutexLock lock(&mu);
    auto all_answered = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return answered == submitted; };
    mu.Await(absl::Condition(&all_answered));
    ASSERT_EQ(failed, 0);
  }
  const double throughput = answered * kSamples / absl::ToDoubleSeconds(last - start);
  const double rate = (*e)->Load().service_rate;
  std::printf("service_rate %.0f, throughput %.0f samples/s over %d jobs\n", rate, throughput, answered);
  EXPECT_GT(rate, 0.75 * throughput);
  EXPECT_LT(rate, 1.33 * throughput);
}

}  // namespace
}  // namespace eenn::server
