#include "common/zoo.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <vector>

#include "common/eenn_model.h"
#include "tests/test_util.h"

namespace eenn::common {
namespace {

std::vector<int64_t> Widths(const Backbone& b) {
  std::vector<int64_t> w;
  for (const auto& l : b.layers) w.push_back(l.feature_dim);
  return w;
}

std::vector<int64_t> Repeat(std::initializer_list<std::pair<int64_t, int>> runs) {
  std::vector<int64_t> out;
  for (auto [v, n] : runs) out.insert(out.end(), n, v);
  return out;
}

TEST(ZooTest, ResNetLayerCountsAndWidthsBothVariants) {
  const std::map<std::string, std::vector<int64_t>> want = {
      {"resnet18", Repeat({{64, 4}, {64, 2}, {128, 2}, {256, 2}, {512, 2}})},
      {"resnet34", Repeat({{64, 4}, {64, 3}, {128, 4}, {256, 6}, {512, 3}})},
      {"resnet50", Repeat({{64, 4}, {256, 3}, {512, 4}, {1024, 6}, {2048, 3}})},
      {"resnet101", Repeat({{64, 4}, {256, 3}, {512, 4}, {1024, 23}, {2048, 3}})},
  };
  const std::map<std::string, size_t> counts = {
      {"resnet18", 12}, {"resnet34", 20}, {"resnet50", 20}, {"resnet101", 37}};
  for (Variant v : {Variant::kCifar, Variant::kImagenet}) {
    for (const auto& [name, widths] : want) {
      for (const std::string suffix : {"", "_nobn"}) {
        auto b = BuildBackbone(name + suffix, {v, 10, 1.0});
        ASSERT_TRUE(b.ok()) << b.status();
        EXPECT_EQ(b->layers.size(), counts.at(name)) << name << suffix;
        EXPECT_EQ(Widths(*b), widths) << name << suffix;
        EXPECT_EQ(b->layers[0].class_name, "ResNetConv1");
        EXPECT_EQ(b->layers[1].class_name, suffix.empty() ? "BatchNorm2d" : "Identity");
        EXPECT_EQ(b->layers[2].class_name, "ReLU");
        EXPECT_EQ(b->layers[3].class_name, "ResNetMaxPool1");
        EXPECT_EQ(b->layers[4].class_name,
                  (name == "resnet50" || name == "resnet101") ? "ResidualBottleneck"
                                                              : "BasicBlock");
      }
    }
  }
}

// Expected VGG layers derived from the configuration independently of the zoo.
std::vector<std::pair<std::string, int64_t>> ExpectedVgg(const std::vector<int>& cfg, bool bn) {
  std::vector<std::pair<std::string, int64_t>> out;
  int64_t c = 3;
  for (int v : cfg) {
    if (v == 0) {
      out.emplace_back("MaxPool2d", c);
      continue;
    }
    c = v;
    out.emplace_back("Conv2d", c);
    if (bn) out.emplace_back("BatchNorm2d", c);
    out.emplace_back("ReLU", c);
  }
  return out;
}

TEST(ZooTest, VggLayerCountsAndWidthsWithAndWithoutBn) {
  const std::map<std::string, std::pair<std::vector<int>, std::pair<size_t, size_t>>> cfgs = {
      {"vgg11", {{64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}, {21, 29}}},
      {"vgg13", {{64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}, {25, 35}}},
      {"vgg16",
       {{64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0}, {31, 44}}},
      {"vgg19", {{64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512,
                  512, 512, 0},
                 {37, 53}}},
  };
  for (Variant v : {Variant::kCifar, Variant::kImagenet}) {
    for (const auto& [name, entry] : cfgs) {
      for (bool bn : {false, true}) {
        auto b = BuildBackbone(bn ? name + "_bn" : name, {v, 100, 1.0});
        ASSERT_TRUE(b.ok()) << b.status();
        EXPECT_EQ(b->layers.size(), bn ? entry.second.second : entry.second.first) << name << bn;
        auto want = ExpectedVgg(entry.first, bn);
        ASSERT_EQ(b->layers.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
          EXPECT_EQ(b->layers[i].class_name, want[i].first) << name << " layer " << i;
          EXPECT_EQ(b->layers[i].feature_dim, want[i].second) << name << " layer " << i;
        }
      }
    }
  }
}

TEST(ZooTest, Vgg16ReferenceIndexing) {
  // The reference's example: 4 pool(64), 9 pool(128), 16 pool(256), 23 and 30 pool(512).
  auto b = BuildBackbone("vgg16", {Variant::kCifar, 10, 1.0});
  ASSERT_TRUE(b.ok());
  for (int i : {4, 9, 16, 23, 30}) EXPECT_EQ(b->layers[i].class_name, "MaxPool2d") << i;
  EXPECT_EQ(b->layers[4].feature_dim, 64);
  EXPECT_EQ(b->layers[9].feature_dim, 128);
  EXPECT_EQ(b->layers[16].feature_dim, 256);
  EXPECT_EQ(b->layers[30].feature_dim, 512);
}

TEST(ZooTest, WidthMultiplierScalesEveryLayer) {
  auto full = BuildBackbone("resnet50", {Variant::kCifar, 10, 1.0});
  auto half = BuildBackbone("resnet50", {Variant::kCifar, 10, 0.5});
  ASSERT_TRUE(full.ok() && half.ok());
  for (size_t i = 0; i < full->layers.size(); ++i) {
    EXPECT_EQ(half->layers[i].feature_dim * 2, full->layers[i].feature_dim) << i;
  }
  EXPECT_EQ(ScaledWidth(64, 0.001), 1);
}

TEST(ZooTest, OutputShapesCifarResNet50) {
  ModelSpec spec;
  spec.architecture = "resnet50";
  auto net = EarlyExitNet::Create(spec);
  ASSERT_TRUE(net.ok()) << net.status();
  const auto& info = (*net)->layer_info();
  EXPECT_EQ(info[3].output_shape, (std::vector<int64_t>{64, 32, 32}));
  EXPECT_EQ(info[6].output_shape, (std::vector<int64_t>{256, 32, 32}));
  EXPECT_EQ(info[10].output_shape, (std::vector<int64_t>{512, 16, 16}));
  EXPECT_EQ(info[16].output_shape, (std::vector<int64_t>{1024, 8, 8}));
  EXPECT_EQ(info[19].output_shape, (std::vector<int64_t>{2048, 4, 4}));
}

TEST(ZooTest, OutputShapesImagenetResNet50) {
  ModelSpec spec;
  spec.architecture = "resnet50";
  spec.variant = Variant::kImagenet;
  spec.num_classes = 1000;
  auto net = EarlyExitNet::Create(spec);
  ASSERT_TRUE(net.ok()) << net.status();
  const auto& info = (*net)->layer_info();
  EXPECT_EQ((*net)->input_shape(), (std::vector<int64_t>{3, 224, 224}));
  EXPECT_EQ(info[2].output_shape, (std::vector<int64_t>{64, 112, 112}));
  EXPECT_EQ(info[3].output_shape, (std::vector<int64_t>{64, 56, 56}));
  EXPECT_EQ(info[19].output_shape, (std::vector<int64_t>{2048, 7, 7}));
}

TEST(ZooTest, ImagenetVggUsesReferenceConvMlpHead) {
  ModelSpec spec;
  spec.architecture = "vgg11";
  spec.variant = Variant::kImagenet;
  spec.width = 0.25;  // keeps the 7x7 head small for the test
  auto net = EarlyExitNet::Create(spec);
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ((*net)->head_config().kind, HeadKind::kConvMlp);
  EXPECT_EQ((*net)->layer_info().back().output_shape, (std::vector<int64_t>{128, 7, 7}));
  bool found = false;
  for (const auto& [name, t] : (*net)->StateDict()) {
    if (name == "gates.20.pre_logits.fc1.weight") {
      found = true;
      EXPECT_EQ(t.sizes(), (c10::IntArrayRef{1024, 128, 7, 7}));
    }
  }
  EXPECT_TRUE(found);
}

TEST(ZooTest, StateDictUsesReferenceKeyLayout) {
  ModelSpec spec;
  spec.architecture = "resnet50";
  spec.exit_layers = {3, 5};
  auto net = EarlyExitNet::Create(spec);
  ASSERT_TRUE(net.ok());
  std::set<std::string> keys;
  for (const auto& [name, t] : (*net)->StateDict()) keys.insert(name);
  for (const char* k : {"backbone.0.conv1.weight", "backbone.1.running_var",
                        "backbone.4.conv1.weight", "backbone.4.bn3.weight",
                        "backbone.4.downsample.0.weight", "backbone.4.downsample.1.weight",
                        "gates.3.fc.0.weight", "gates.5.fc.0.bias", "gates.19.fc.0.weight"}) {
    EXPECT_TRUE(keys.count(k)) << k;
  }
}

TEST(ZooTest, UnknownArchitectureAndBadOptions) {
  EXPECT_EQ(BuildBackbone("resnet7", {}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(BuildBackbone("resnet18", {Variant::kCifar, 1, 1.0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildBackbone("resnet18", {Variant::kCifar, 10, 0.0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ZooTest, UserDefinedBackboneGetsExitsAndSplitting) {
  testing::RegisterTinyBackbone();
  EXPECT_EQ(RegisterBackbone("test_tiny", [](const BackboneOptions&) {
              return absl::StatusOr<Backbone>(Backbone{});
            }).code(),
            absl::StatusCode::kAlreadyExists);
  ModelSpec spec;
  spec.architecture = "test_tiny";
  spec.exit_layers = {1};
  auto net = EarlyExitNet::Create(spec);
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ((*net)->num_layers(), 4);
  EXPECT_EQ((*net)->exit_layers(), (std::vector<int>{1, 3}));
  EXPECT_EQ((*net)->LayerInputShape(2), (std::vector<int64_t>{8, 8, 8}));

  // A factory whose declared width disagrees with what the layer outputs is refused.
  ASSERT_TRUE(RegisterBackbone("test_liar", [](const BackboneOptions&) {
                Backbone b;
                b.layers.push_back(MakeLayer(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 1)),
                                             "Conv2d", 5));
                b.input_shape = {3, 4, 4};
                return absl::StatusOr<Backbone>(std::move(b));
              }).ok());
  spec.architecture = "test_liar";
  spec.exit_layers = {};
  auto liar = EarlyExitNet::Create(spec);
  EXPECT_EQ(liar.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(liar.status().message().find("feature_dim"), std::string::npos);
}

TEST(ZooTest, ExitLayerValidation) {
  ModelSpec spec;
  spec.architecture = "resnet18";
  spec.width = 0.25;
  spec.exit_layers = {5, 3};
  EXPECT_EQ(EarlyExitNet::Create(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.exit_layers = {12};
  EXPECT_EQ(EarlyExitNet::Create(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.exit_layers = {4, 4};
  EXPECT_EQ(EarlyExitNet::Create(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.exit_layers = {4, 11};
  auto ok = EarlyExitNet::Create(spec);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)->exit_layers(), (std::vector<int>{4, 11}));
}

}  // namespace
}  // namespace eenn::common
