#include "common/bundle.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "tests/test_util.h"

namespace eenn::common {
namespace {

using nlohmann::json;

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ModelSpec spec;
    spec.architecture = "resnet18";
    spec.width = 0.25;
    spec.exit_layers = {4, 7};
    auto net = EarlyExitNet::Create(spec);
    ASSERT_TRUE(net.ok()) << net.status();
    net_ = *net;
    testing::Perturb(*net_, 3);
    BundleManifest m = DefaultManifest(*net_, "test-model", "7");
    m.thresholds = {0.6f, 0.8f, 0.0f};
    m.metadata_json = R"({"note": "unit test"})";
    ASSERT_TRUE(SaveBundle(dir_.path(), m, *net_).ok());
  }
  std::string ManifestPath() const { return dir_.Join("manifest.json"); }
  json Manifest() const { return json::parse(testing::ReadAll(ManifestPath())); }
  void WriteManifest(const json& j) const { testing::WriteAll(ManifestPath(), j.dump(2)); }
  void ExpectLoadError(absl::StatusCode code, const std::string& needle) {
    auto b = LoadBundle(dir_.path());
    ASSERT_FALSE(b.ok()) << needle;
    EXPECT_EQ(b.status().code(), code) << b.status();
    EXPECT_NE(b.status().message().find(needle), std::string::npos) << b.status();
    EXPECT_NE(b.status().message().find(dir_.path()), std::string::npos) << b.status();
  }

  testing::TempDir dir_;
  std::shared_ptr<EarlyExitNet> net_;
};

TEST_F(BundleTest, RoundTripGivesIdenticalOutputsAndManifest) {
  auto b = LoadBundle(dir_.path());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->manifest.model_name, "test-model");
  EXPECT_EQ(b->manifest.model_version, "7");
  EXPECT_EQ(b->manifest.spec.exit_layers, (std::vector<int>{4, 7, 11}));
  EXPECT_EQ(b->policy.thresholds, (std::vector<float>{0.6f, 0.8f, 0.0f}));
  EXPECT_EQ(b->manifest.input.shape, (std::vector<int64_t>{3, 32, 32}));
  EXPECT_NE(b->manifest.metadata_json.find("unit test"), std::string::npos);
  torch::manual_seed(2);
  torch::Tensor x = torch::randn({3, 3, 32, 32});
  torch::InferenceMode guard;
  torch::Tensor a = net_->ForwardAllExits(x);
  torch::Tensor c = b->model->ForwardAllExits(x);
  EXPECT_TRUE(torch::equal(a, c));
  // Buffers (BN running statistics) travel too.
  auto sa = net_->StateDict();
  auto sb = b->model->StateDict();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
  }
  EXPECT_EQ(*Sha256File(dir_.Join("weights.pt")), b->manifest.weights_sha256);
}

TEST_F(BundleTest, WeightsAreReadableByPythonTorchLoadFormat) {
  // pickle_save writes the zip container that torch.load reads: check the magic.
  std::string w = testing::ReadAll(dir_.Join("weights.pt"));
  ASSERT_GE(w.size(), 4u);
  EXPECT_EQ(w.substr(0, 2), "PK");
}

TEST_F(BundleTest, MissingManifest) {
  std::filesystem::remove(ManifestPath());
  ExpectLoadError(absl::StatusCode::kNotFound, "manifest.json");
}

TEST_F(BundleTest, MissingWeights) {
  std::filesystem::remove(dir_.Join("weights.pt"));
  ExpectLoadError(absl::StatusCode::kNotFound, "weights.pt");
}

TEST_F(BundleTest, BadJson) {
  testing::WriteAll(ManifestPath(), "{\"format_version\": 1,");
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "not valid JSON");
}

TEST_F(BundleTest, MissingField) {
  json j = Manifest();
  j["exits"].erase("confidence");
  WriteManifest(j);
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "exits.confidence");
}

TEST_F(BundleTest, ChecksumMismatch) {
  std::string w = testing::ReadAll(dir_.Join("weights.pt"));
  w[w.size() / 2] ^= 0x01;
  testing::WriteAll(dir_.Join("weights.pt"), w);
  ExpectLoadError(absl::StatusCode::kDataLoss, "checksum mismatch");
}

TEST_F(BundleTest, WeightsOfAnotherWidthDoNotFit) {
  json j = Manifest();
  j["architecture"]["width"] = 0.5;
  WriteManifest(j);
  ExpectLoadError(absl::StatusCode::kFailedPrecondition, "mis-shaped");
}

TEST_F(BundleTest, WeightsOfAnotherArchitectureDoNotFit) {
  json j = Manifest();
  j["architecture"]["name"] = "resnet34";
  j["exits"]["layers"] = {4, 7, 19};
  WriteManifest(j);
  ExpectLoadError(absl::StatusCode::kFailedPrecondition, "missing");
}

TEST_F(BundleTest, ExtraExitInManifestIsUnexpectedInWeights) {
  json j = Manifest();
  j["exits"]["layers"] = {4, 7, 11};
  j["exits"]["thresholds"] = {0.5, 0.5, 0};
  WriteManifest(j);
  // Same exits: loads. One fewer exit: the weights carry an unexpected head.
  ASSERT_TRUE(LoadBundle(dir_.path()).ok());
  j["exits"]["layers"] = {4, 11};
  j["exits"]["thresholds"] = {0.5, 0};
  WriteManifest(j);
  ExpectLoadError(absl::StatusCode::kFailedPrecondition, "unexpected (gates.7");
}

TEST_F(BundleTest, ExitsMustEndAtTheFinalLayer) {
  json j = Manifest();
  j["exits"]["layers"] = {4, 7};
  j["exits"]["thresholds"] = {0.5, 0};
  WriteManifest(j);
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "final layer 11");
}

TEST_F(BundleTest, UnknownArchitecture) {
  json j = Manifest();
  j["architecture"]["name"] = "alexnet";
  WriteManifest(j);
  ExpectLoadError(absl::StatusCode::kNotFound, "unknown architecture 'alexnet'");
}

TEST_F(BundleTest, InputShapeMustMatchVariant) {
  json j = Manifest();
  j["input"]["shape"] = {3, 64, 64};
  WriteManifest(j);
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "input.shape");
}

TEST_F(BundleTest, GarbageWeightsWithMatchingChecksum) {
  const std::string garbage = "this is not a LibTorch archive";
  testing::WriteAll(dir_.Join("weights.pt"), garbage);
  json j = Manifest();
  j["weights"]["sha256"] = Sha256Hex(garbage);
  WriteManifest(j);
  ExpectLoadError(absl::StatusCode::kDataLoss, "cannot read weights");
}

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256File("/nonexistent/file").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace eenn::common
