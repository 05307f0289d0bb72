#include "server/offload_service.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "absl/synchronization/notification.h"
#include "common/bundle.h"
#include "common/tensor_codec.h"
#include "proto/wire.h"
#include "server/metrics.h"
#include "tests/test_util.h"
#include "tests/tiny_net.h"

namespace eenn::server {
namespace {

// The service's admission order: what is cheap to check (model, split,
// shape, declared byte counts) comes first, then a place in the engine's
// queue, and only then the tensor is decoded.
class OffloadServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto net = testing::TinyNet(3);
    ASSERT_NE(net, nullptr);
    ASSERT_TRUE(common::SaveBundle(dir_.path(), common::DefaultManifest(*net, "tiny", "7"), *net).ok());
    exit_layers_ = net->spec().exit_layers;
  }

  void Start(OffloadEngineOptions o) {
    metrics_ = std::make_unique<ServerMetrics>(registry_, "tiny", "7", exit_layers_);
    auto e = OffloadEngine::Create(dir_.path(), o, metrics_.get());
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    service_ = std::make_unique<OffloadServiceImpl>(engine_.get(), metrics_.get());
  }

  // A Resume request at split 1 of `n` all-zero samples, zstd-compressed:
  // a few dozen bytes on the wire, n * 2 KiB decoded.
  static v1::ResumeRequest ZeroRequest(int n) {
    std::vector<int64_t> shape = {n, 8, 8, 8};
    std::vector<float> zeros(static_cast<size_t>(n) * 512, 0.0f);
    auto t = common::EncodeTensor(zeros.data(), shape, {common::WireEncoding::kFp32, common::WireCompression::kZstd});
    EXPECT_TRUE(t.ok()) << t.status();
    v1::ResumeRequest req;
    req.set_request_id("r");
    req.set_model_name("tiny");
    req.set_model_version("7");
    req.set_split_layer(1);
    wire::ToProto(std::move(*t), req.mutable_tensor());
    return req;
  }

  double Requests(absl::StatusCode code) {
    for (const auto& f : registry_.Collect()) {
      if (f.name != "eenn_server_requests_total") continue;
      for (const auto& m : f.metric) {
        if (m.label.at(0).value == wire::CodeName(code)) return m.counter.value;
      }
    }
    return -1;
  }

  testing::TempDir dir_;
  std::vector<int> exit_layers_;
  prometheus::Registry registry_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<OffloadEngine> engine_;
  std::unique_ptr<OffloadServiceImpl> service_;
};

TEST_F(OffloadServiceTest, AFullQueueRefusesBeforeDecoding) {
  OffloadEngineOptions o;
  o.queue_capacity = 1;
  Start(o);
  // A truncated zstd frame: decoding it fails, so an answer other than
  // INVALID_ARGUMENT means it was never decoded.
  v1::ResumeRequest corrupt = ZeroRequest(32);
  std::string* data = corrupt.mutable_tensor()->mutable_data();
  data->resize(data->size() - 3);
  {
    auto held = engine_->Admit(1, {1, 8, 8, 8});  // the queue's one place
    ASSERT_TRUE(held.ok()) << held.status();
    auto refused = service_->Decode(corrupt);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
    EXPECT_EQ(service_->Decode(ZeroRequest(32)).status().code(), absl::StatusCode::kResourceExhausted);
    // Declared sizes that disagree with the shape are refused as such, full queue or not.
    v1::ResumeRequest lying = ZeroRequest(32);
    lying.mutable_tensor()->set_encoded_size(4);
    auto bad = service_->Decode(lying);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("encoded_size is 4 bytes"), std::string::npos) << bad.status();
  }
  auto bad = service_->Decode(corrupt);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  // A failed decode gave its place back.
  auto ok = service_->Decode(ZeroRequest(32));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->job.values.size(), 32u * 512u);
  EXPECT_EQ(engine_->Admit(1, {1, 8, 8, 8}).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(OffloadServiceTest, QueuedBytesBoundTheDecodedTensors) {
  OffloadEngineOptions o;
  o.max_queued_bytes = 32 * 512 * sizeof(float);  // exactly one request of 32 samples
  Start(o);
  auto held = engine_->Admit(1, {1, 8, 8, 8});
  ASSERT_TRUE(held.ok()) << held.status();
  auto refused = service_->Decode(ZeroRequest(32));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("max_queued_bytes"), std::string::npos) << refused.status();
  EXPECT_TRUE(service_->Decode(ZeroRequest(31)).ok());
}

TEST_F(OffloadServiceTest, HandleCountsARefusedRequestOnceAndRunsTheNext) {
  OffloadEngineOptions o;
  o.queue_capacity = 1;
  o.max_queue_delay = absl::ZeroDuration();
  Start(o);
  {
    auto held = engine_->Admit(1, {1, 8, 8, 8});
    ASSERT_TRUE(held.ok());
    absl::Status s = absl::UnknownError("not answered");
    service_->Handle(ZeroRequest(4), absl::InfiniteFuture(),
                     [&](const absl::Status& st, v1::ResumeReply&&) { s = st; });
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);  // inline
  }
  EXPECT_EQ(Requests(absl::StatusCode::kResourceExhausted), 1);
  absl::Notification done;
  absl::Status s;
  v1::ResumeReply reply;
  service_->Handle(ZeroRequest(4), absl::InfiniteFuture(), [&](const absl::Status& st, v1::ResumeReply&& r) {
    s = st;
    reply = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(reply.predictions_size(), 4);
  EXPECT_EQ(reply.timings().batch_size(), 4);
  EXPECT_EQ(Requests(absl::StatusCode::kOk), 1);
  EXPECT_EQ(Requests(absl::StatusCode::kResourceExhausted), 1);
  EXPECT_EQ(metrics_->samples->Value(), 4);
}

}  // namespace
}  // namespace eenn::server
