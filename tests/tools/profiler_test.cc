// eenn-profile's measurement library on a small real network and real image
// files: every layer and exit profiled, exact wire sizes, exit shares that
// agree with the runtime's own decisions.
#include "tools/profiler.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <opencv2/imgcodecs.hpp>

#include "common/bundle.h"
#include "common/fast_forward.h"
#include "common/image.h"
#include "common/tensor_image.h"
#include "tests/test_util.h"

namespace eenn::tools {
namespace {

namespace fs = std::filesystem;

class ProfilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    common::ModelSpec spec;
    spec.architecture = "resnet18";
    spec.width = 0.25;
    spec.exit_layers = {4, 7};
    auto net = common::EarlyExitNet::Create(spec);
    ASSERT_TRUE(net.ok()) << net.status();
    testing::Perturb(**net, 5);
    auto manifest = common::DefaultManifest(**net, "profile-test", "7");
    manifest.class_names = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"};
    manifest.thresholds = {0.2f, 0.25f, 0.0f};
    ASSERT_TRUE(common::SaveBundle(dir_.Join("bundle"), manifest, **net).ok());
    auto b = common::LoadBundle(dir_.Join("bundle"));
    ASSERT_TRUE(b.ok()) << b.status();
    bundle_ = std::make_unique<common::Bundle>(*std::move(b));
    cv::RNG rng(3);
    for (int i = 0; i < 30; ++i) {
      const std::string cls = i % 2 ? "c1" : "c4";
      fs::create_directories(dir_.Join("images/" + cls));
      cv::Mat m(32, 32, CV_8UC3);
      rng.fill(m, cv::RNG::UNIFORM, 0, 255);
      const std::string path = dir_.Join("images/" + cls + "/" + std::to_string(i) + ".png");
      cv::imwrite(path, m);
      files_.push_back(path);
    }
  }

  testing::TempDir dir_;
  std::unique_ptr<common::Bundle> bundle_;
  std::vector<std::string> files_;
};

TEST_F(ProfilerTest, ProfilesEveryLayerAndExit) {
  ProfilerOptions o;
  o.samples = 12;
  o.warmup = 2;
  o.wire_samples = 3;
  o.calibration_batch = 7;  // batches that do not divide the image count
  auto p = ProfileBundle(*bundle_, files_, files_, o);
  ASSERT_TRUE(p.ok()) << p.status();
  const common::EarlyExitNet& net = *bundle_->model;
  ASSERT_EQ(p->num_layers(), net.num_layers());
  EXPECT_EQ(p->model_name, "profile-test");
  EXPECT_EQ(p->model_version, "7");
  EXPECT_EQ(p->samples, 12);
  EXPECT_EQ(p->calibration_samples, 30);
  EXPECT_EQ(p->layers[0].key, "layer_0_ResNetConv1_1");  // the reference's names
  EXPECT_EQ(p->layers[5].key, "layer_5_BasicBlock_2");
  EXPECT_EQ(p->layers[2].key, "layer_2_ReLU_1");
  int64_t params = 0;
  for (const auto& [name, t] : net.StateDict()) {
    if (name.rfind("backbone.", 0) == 0) params += t.numel() * t.element_size();
  }
  int64_t profiled = 0;
  // On the oneDNN path a fused group's time goes to its first layer: the
  // stem's conv carries its BN and ReLU layers, which get 0.
  ASSERT_TRUE(net.onednn());
  std::vector<bool> inside_group(net.num_layers(), false);
  for (int k = 0; k < net.num_layers(); ++k) {
    for (int j = 1; j < net.lowered()->GroupSpan(k); ++j) inside_group[k + j] = true;
  }
  EXPECT_TRUE(inside_group[1] && inside_group[2]);
  for (const auto& l : p->layers) {
    EXPECT_EQ(l.ms.n, 12) << l.key;
    if (inside_group[l.index]) {
      EXPECT_EQ(l.ms.max, 0) << l.key;
    } else {
      EXPECT_GT(l.ms.mean, 0) << l.key;
    }
    EXPECT_LE(l.ms.min, l.ms.p50);
    EXPECT_LE(l.ms.p50, l.ms.p90);
    EXPECT_LE(l.ms.p90, l.ms.max);
    profiled += l.param_bytes;
    // Exact payload sizes for the uncompressed encodings.
    int64_t numel = 1;
    for (int64_t d : l.output_shape) numel *= d;
    EXPECT_DOUBLE_EQ(l.wire.at("fp32").bytes, 4.0 * numel) << l.key;
    EXPECT_DOUBLE_EQ(l.wire.at("fp16").bytes, 2.0 * numel) << l.key;
    EXPECT_DOUBLE_EQ(l.wire.at("int8").bytes, 1.0 * numel) << l.key;
    EXPECT_GT(l.wire.at("fp32+zstd").bytes, 0);
  }
  EXPECT_EQ(profiled, params);
  EXPECT_DOUBLE_EQ(p->input_wire.at("fp32").bytes, 4.0 * 3 * 32 * 32);
  ASSERT_EQ(p->exits.size(), 3u);
  ASSERT_EQ(p->heads.size(), 3u);
  EXPECT_EQ(p->heads[1].key, "gate_1_layer_7_ClassifierHead_1");
  // Single-exit latency grows with depth.
  EXPECT_LT(p->exits[0].single_ms.p50, p->exits[2].single_ms.p50);
  EXPECT_DOUBLE_EQ(p->full_ms.mean, p->exits[2].single_ms.mean);

  // Shares: the runtime's own decisions over the same files.
  std::vector<cv::Mat> images;
  for (const auto& f : files_) images.push_back(*common::ReadImageFile(f));
  auto x = common::ImagesToTensor(images, bundle_->manifest.input);
  ASSERT_TRUE(x.ok());
  auto res = net.Classify(*x, bundle_->policy);
  ASSERT_TRUE(res.ok());
  std::vector<int> count(3, 0), right(3, 0);
  for (size_t i = 0; i < res->size(); ++i) {
    const auto& r = (*res)[i];
    ++count[r.exit_index];
    if (r.class_id == (i % 2 ? 1 : 4)) ++right[r.exit_index];
  }
  double total = 0;
  for (int g = 0; g < 3; ++g) {
    EXPECT_DOUBLE_EQ(p->exits[g].share, count[g] / 30.0) << "exit " << g;
    if (count[g] > 0) {
      EXPECT_DOUBLE_EQ(p->exits[g].accuracy, double(right[g]) / count[g]) << "exit " << g;
    }
    total += p->exits[g].share;
  }
  EXPECT_NEAR(total, 1.0, 1e-12);

  // And the JSON it writes reads back.
  auto back = common::ProfileFromJson(common::ProfileToJson(*p));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->num_layers(), p->num_layers());
}

TEST_F(ProfilerTest, BadInputIsAClearError) {
  ProfilerOptions o;
  EXPECT_EQ(ProfileBundle(*bundle_, {}, {}, o).status().code(), absl::StatusCode::kInvalidArgument);
  testing::WriteAll(dir_.Join("broken.png"), "not an image");
  auto r = ProfileBundle(*bundle_, {dir_.Join("broken.png")}, {}, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("broken.png"), std::string::npos) << r.status();
  o.wire_keys = {"fp64"};
  EXPECT_EQ(ProfileBundle(*bundle_, files_, {}, o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace eenn::tools
