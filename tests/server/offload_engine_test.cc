#include "server/offload_engine.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/synchronization/notification.h"
#include "common/bundle.h"
#include "tests/test_util.h"

namespace eenn::server {
namespace {

class OffloadEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::RegisterTinyBackbone();
    common::ModelSpec spec;
    spec.architecture = "test_tiny";
    spec.exit_layers = {1};
    auto net = common::EarlyExitNet::Create(spec);
    ASSERT_TRUE(net.ok()) << net.status();
    testing::Perturb(**net, 3);
    auto m = common::DefaultManifest(**net, "tiny", "7");
    m.thresholds = {0.3f, 0.0f};
    ASSERT_TRUE(common::SaveBundle(dir_.path(), m, **net).ok());
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
  EXPECT_NE(e->ValidateShape(2, {65, 8, 8, 8}).message().find("1..64"), std::string::npos);
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

}  // namespace
}  // namespace eenn::server
