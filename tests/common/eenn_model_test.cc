#include "common/eenn_model.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "tests/test_util.h"

namespace eenn::common {
namespace {

std::shared_ptr<EarlyExitNet> MakeNet(const std::string& arch, std::vector<int> exits,
                                      double width = 1.0) {
  ModelSpec spec;
  spec.architecture = arch;
  spec.exit_layers = std::move(exits);
  spec.width = width;
  auto net = EarlyExitNet::Create(spec);
  EXPECT_TRUE(net.ok()) << net.status();
  testing::Perturb(**net, 7);
  return *net;
}

ExitPolicy NoEarlyExits(const EarlyExitNet& net) {
  ExitPolicy p;
  p.thresholds.assign(net.num_exits(), -1.0f);
  p.thresholds.back() = 0.0f;
  return p;
}

void ExpectSplitResumeEqualsFull(const std::string& arch) {
  auto net = MakeNet(arch, {});
  torch::manual_seed(1);
  torch::Tensor x = torch::randn({2, 3, 32, 32});
  const int last = net->num_exits() - 1;
  torch::InferenceMode guard;
  torch::Tensor full = net->ForwardExit(x, last);
  auto full_result = net->Classify(x, NoEarlyExits(*net));
  ASSERT_TRUE(full_result.ok());
  for (int k = 0; k <= net->num_layers(); ++k) {
    auto head = net->Run(x, 0, k, NoEarlyExits(*net));
    ASSERT_TRUE(head.ok()) << head.status();
    if (k == net->num_layers()) {
      // Splitting after the last layer decides everything on the head side.
      EXPECT_TRUE(head->pending.empty());
      continue;
    }
    ASSERT_EQ(head->pending.size(), 2u) << "split " << k;
    EXPECT_EQ(std::vector<int64_t>(head->pending_input.sizes().begin() + 1,
                                   head->pending_input.sizes().end()),
              net->LayerInputShape(k));
    torch::Tensor resumed =
        net->ForwardHead(net->ForwardLayers(head->pending_input, k, net->num_layers()), last);
    EXPECT_LE((resumed - full).abs().max().item<float>(), 1e-5f) << arch << " split " << k;
    auto tail = net->Run(head->pending_input, k, net->num_layers(), NoEarlyExits(*net));
    ASSERT_TRUE(tail.ok()) << tail.status();
    for (int i = 0; i < 2; ++i) {
      EXPECT_TRUE(tail->decided[i]);
      EXPECT_EQ(tail->results[i].class_id, (*full_result)[i].class_id);
      EXPECT_NEAR(tail->results[i].confidence, (*full_result)[i].confidence, 1e-5);
    }
  }
}

TEST(EenNetTest, SplitAtEveryLayerThenResumeEqualsFullForwardResNet50) {
  ExpectSplitResumeEqualsFull("resnet50");
}

TEST(EenNetTest, SplitAtEveryLayerThenResumeEqualsFullForwardVgg16Bn) {
  ExpectSplitResumeEqualsFull("vgg16_bn");
}

TEST(EenNetTest, SplitWithExitsMatchesClassify) {
  auto net = MakeNet("resnet18", {2, 4, 6, 8}, 0.25);
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({16, 3, 32, 32});
  // Thresholds at the median confidence of each exit make samples leave at different exits.
  ExitPolicy probe{std::vector<float>(net->num_exits(), 2.0f), ConfidenceFunction::kMax};
  auto all = net->Classify(x, probe);
  ASSERT_TRUE(all.ok());
  ExitPolicy policy{{}, ConfidenceFunction::kMax};
  for (int g = 0; g < net->num_exits(); ++g) {
    std::vector<float> c;
    for (const auto& r : *all) c.push_back(r.confidences[g]);
    std::sort(c.begin(), c.end());
    policy.thresholds.push_back(g + 1 == net->num_exits() ? 0.0f : (c[7] + c[8]) / 2);
  }
  auto whole = net->Classify(x, policy);
  ASSERT_TRUE(whole.ok());
  std::set<int> exits_seen;
  for (const auto& r : *whole) exits_seen.insert(r.exit_layer);
  EXPECT_GE(exits_seen.size(), 3u);
  for (int k = 0; k <= net->num_layers(); ++k) {
    auto head = net->Run(x, 0, k, policy);
    ASSERT_TRUE(head.ok());
    std::vector<ExitResult> combined = head->results;
    if (!head->pending.empty()) {
      auto tail = net->Run(head->pending_input, k, net->num_layers(), policy);
      ASSERT_TRUE(tail.ok());
      for (size_t j = 0; j < head->pending.size(); ++j) {
        ExitResult& r = combined[head->pending[j]];
        const ExitResult& t = tail->results[j];
        r.exit_layer = t.exit_layer;
        r.class_id = t.class_id;
        r.confidence = t.confidence;
      }
    }
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(combined[i].exit_layer, (*whole)[i].exit_layer) << "split " << k;
      EXPECT_EQ(combined[i].class_id, (*whole)[i].class_id);
    }
  }
}

TEST(EenNetTest, AllExitsForwardShape) {
  auto net = MakeNet("resnet18", {3, 5, 7}, 0.25);
  torch::Tensor out = net->ForwardAllExits(torch::randn({4, 3, 32, 32}));
  EXPECT_EQ(out.sizes(), (c10::IntArrayRef{4, 10, 4}));
  // The last slice is the final classifier, the same as ForwardExit(last).
  torch::InferenceMode guard;
  torch::Tensor x = torch::randn({2, 3, 32, 32});
  torch::Tensor all = net->ForwardAllExits(x);
  for (int g = 0; g < 4; ++g) {
    EXPECT_LE((all.select(2, g) - net->ForwardExit(x, g)).abs().max().item<float>(), 1e-5f);
  }
}

// Every exit's logits for `x` with gradients on (the heads' modules) and off
// (their inference paths) agree within `tol` of the largest logit.
void ExpectInferenceEqualsModules(EarlyExitNet& net, const torch::Tensor& x, float tol,
                                  const std::string& context) {
  std::vector<torch::Tensor> modules = net.ForwardExits(x, net.num_exits() - 1);
  ASSERT_TRUE(modules[0].requires_grad()) << context;  // the module path
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> fast = net.ForwardExits(x, net.num_exits() - 1);
  ASSERT_EQ(fast.size(), modules.size()) << context;
  for (size_t g = 0; g < fast.size(); ++g) {
    ASSERT_EQ(fast[g].sizes(), modules[g].sizes()) << context;
    const float scale = modules[g].abs().max().item<float>() + 1e-3f;
    EXPECT_LE((fast[g] - modules[g].detach()).abs().max().item<float>(), tol * scale)
        << context << ", exit " << g;
  }
}

// At inference a pooled head runs as plain loops (common/head_kernels.h);
// with gradients on it runs its modules. Both give the same logits, with and
// without a hidden layer, with global and 2x2/4x4 exit pooling, at batch 1 and
// in a batch, on odd map sizes (where a 2x2 pool of an odd map runs the modules).
TEST(EenNetTest, PooledHeadInferenceLoopsEqualTheModules) {
  for (auto [hidden, pool] : std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {37, 1}, {0, 2}, {0, 4}, {19, 4}}) {
    ModelSpec spec;
    spec.exit_pool = pool;
    spec.architecture = "resnet18";
    spec.width = 0.25;
    spec.exit_layers = {3, 5, 8};
    spec.head_override = true;
    spec.head.hidden = hidden;
    auto n = EarlyExitNet::Create(spec);
    ASSERT_TRUE(n.ok()) << n.status();
    testing::Perturb(**n, 11);
    (*n)->eval();
    for (int64_t batch : {1, 3}) {
      torch::Tensor x = torch::randn({batch, 3, pool == 2 ? 36 : 32, pool == 2 ? 28 : 32});
      ExpectInferenceEqualsModules(**n, x, 1e-5f,
                                   "hidden " + std::to_string(hidden) + ", pool " + std::to_string(pool) +
                                       ", batch " + std::to_string(batch));
    }
  }
  ModelSpec bad;
  bad.exit_layers = {3};
  bad.exit_pool = 0;
  EXPECT_EQ(EarlyExitNet::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.exit_pool = 2;
  bad.head_override = true;
  bad.head.kind = HeadKind::kConvMlp;
  bad.head.hidden = 8;
  EXPECT_EQ(EarlyExitNet::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// At inference the VGG (ImageNet) ConvMlp head on a 7 x 7 map runs its two
// convolutions as matrix-vector products; with gradients on, as
// convolutions. Same logits, at batch 1 and in a batch; an exit on a larger
// map keeps the convolutions.
TEST(EenNetTest, ConvMlpHeadAsMatrixProductsEqualsTheConvolutions) {
  ModelSpec spec;
  spec.architecture = "vgg11_bn";
  spec.variant = Variant::kImagenet;
  spec.width = 0.0625;
  spec.exit_layers = {10};  // after the third convolution's ReLU: a 56 x 56 map
  auto n = EarlyExitNet::Create(spec);
  ASSERT_TRUE(n.ok()) << n.status();
  testing::Perturb(**n, 5);
  (*n)->eval();
  for (int64_t batch : {1, 2}) {
    ExpectInferenceEqualsModules(**n, torch::randn({batch, 3, 224, 224}), 1e-4f,
                                 "batch " + std::to_string(batch));
  }
}

class ThresholdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::RegisterTinyBackbone();
    ModelSpec spec;
    spec.architecture = "test_tiny";
    spec.exit_layers = {0, 1, 2};
    auto n = EarlyExitNet::Create(spec);
    ASSERT_TRUE(n.ok()) << n.status();
    net_ = *n;
    testing::Perturb(*net_, 11);
    torch::manual_seed(5);
    x_ = torch::randn({1, 3, 8, 8});
    // Every exit evaluated, none fires before the final one.
    auto r = net_->Classify(x_, Policy({1.0f, 1.0f, 1.0f, 0.0f}));
    ASSERT_TRUE(r.ok());
    conf_ = (*r)[0].confidences;
    ASSERT_EQ(conf_.size(), 4u);
    for (float c : conf_) ASSERT_LT(c, 1.0f);
  }
  static ExitPolicy Policy(std::vector<float> t,
                           ConfidenceFunction f = ConfidenceFunction::kMax) {
    return ExitPolicy{std::move(t), f};
  }
  ExitResult One(const ExitPolicy& p) {
    auto r = net_->Classify(x_, p);
    EXPECT_TRUE(r.ok()) << r.status();
    return (*r)[0];
  }
  std::shared_ptr<EarlyExitNet> net_;
  torch::Tensor x_;
  std::vector<float> conf_;
};

TEST_F(ThresholdTest, ExitRequiresStrictlyGreaterConfidence) {
  // Equal to the threshold: stays in.
  ExitResult equal = One(Policy({conf_[0], 1.0f, 1.0f, 0.0f}));
  EXPECT_EQ(equal.exit_layer, 3);
  // Just below the confidence: leaves at exit 0.
  const float below = std::nextafter(conf_[0], -1.0f);
  ExitResult leaves = One(Policy({below, 1.0f, 1.0f, 0.0f}));
  EXPECT_EQ(leaves.exit_layer, 0);
  EXPECT_EQ(leaves.exit_index, 0);
  EXPECT_FLOAT_EQ(leaves.confidence, conf_[0]);
  EXPECT_EQ(leaves.confidences.size(), 1u);
}

TEST_F(ThresholdTest, NegativeThresholdSkipsTheExit) {
  // Threshold 0 would fire at exit 0; -1 disables it, so exit 1 (threshold 0) answers.
  EXPECT_EQ(One(Policy({0.0f, 0.0f, 0.0f, 0.0f})).exit_layer, 0);
  ExitResult r = One(Policy({-1.0f, 0.0f, 0.0f, 0.0f}));
  EXPECT_EQ(r.exit_layer, 1);
  EXPECT_EQ(r.confidences.size(), 1u);  // the skipped exit was not evaluated
  EXPECT_FLOAT_EQ(r.confidences[0], conf_[1]);
  ExitResult none = One(Policy({-1.0f, -0.5f, -1e-6f, 0.0f}));
  EXPECT_EQ(none.exit_layer, 3);
  EXPECT_EQ(none.confidences.size(), 1u);
}

TEST_F(ThresholdTest, FinalExitAlwaysAnswers) {
  // Even with thresholds nothing can exceed (and a negative final threshold).
  for (float final_t : {0.0f, 1.0f, -1.0f}) {
    ExitResult r = One(Policy({1.0f, 1.0f, 1.0f, final_t}));
    EXPECT_EQ(r.exit_layer, 3);
    EXPECT_EQ(r.exit_index, 3);
    EXPECT_FLOAT_EQ(r.confidence, conf_[3]);
  }
}

TEST_F(ThresholdTest, EntropyConfidenceDrivesExits) {
  auto r = net_->Classify(x_, Policy({1.0f, 1.0f, 1.0f, 0.0f}, ConfidenceFunction::kEntropy));
  ASSERT_TRUE(r.ok());
  const auto& ent = (*r)[0].confidences;
  ASSERT_EQ(ent.size(), 4u);
  for (float c : ent) {
    EXPECT_GE(c, 0.0f);
    EXPECT_LE(c, 1.0f);
  }
  ExitResult e = One(Policy({std::nextafter(ent[0], -1.0f), 1.0f, 1.0f, 0.0f},
                            ConfidenceFunction::kEntropy));
  EXPECT_EQ(e.exit_layer, 0);
}

TEST_F(ThresholdTest, PolicyValidation) {
  EXPECT_EQ(net_->Classify(x_, Policy({0.5f, 0.0f})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net_->Classify(x_, Policy({NAN, 0.5f, 0.5f, 0.0f})).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Wrong input shape, wrong layer range.
  EXPECT_EQ(net_->Classify(torch::randn({1, 3, 9, 8}), Policy({1, 1, 1, 0})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net_->Run(x_, 2, 1, Policy({1, 1, 1, 0})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net_->Run(x_, 0, 5, Policy({1, 1, 1, 0})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConfidenceTest, MaxAndEntropyOnOneHotAndUniform) {
  torch::Tensor one_hot = torch::zeros({1, 10});
  one_hot[0][3] = 1.0;
  torch::Tensor uniform = torch::full({1, 10}, 0.1);
  EXPECT_FLOAT_EQ(Confidence(one_hot, ConfidenceFunction::kMax).item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(Confidence(uniform, ConfidenceFunction::kMax).item<float>(), 0.1f);
  // 0 * ln 0 counts as 0: a one-hot distribution has entropy confidence 1, not NaN.
  EXPECT_FLOAT_EQ(Confidence(one_hot, ConfidenceFunction::kEntropy).item<float>(), 1.0f);
  EXPECT_NEAR(Confidence(uniform, ConfidenceFunction::kEntropy).item<float>(), 0.0f, 1e-6);
  torch::Tensor half = torch::zeros({1, 4});
  half[0][0] = 0.5;
  half[0][1] = 0.5;
  EXPECT_NEAR(Confidence(half, ConfidenceFunction::kEntropy).item<float>(), 0.5f, 1e-6);
}

TEST(EenNetBatchTest, BatchedAnswersEqualBatchOfOne) {
  auto net = MakeNet("resnet18", {2, 4, 6, 8}, 0.25);
  torch::manual_seed(9);
  torch::Tensor x = torch::randn({12, 3, 32, 32});
  ExitPolicy probe{std::vector<float>(net->num_exits(), 2.0f), ConfidenceFunction::kMax};
  auto all = net->Classify(x, probe);
  ASSERT_TRUE(all.ok());
  // Per exit, a threshold in the widest gap near the median, so no sample sits on it.
  ExitPolicy policy{{}, ConfidenceFunction::kMax};
  for (int g = 0; g + 1 < net->num_exits(); ++g) {
    std::vector<float> c;
    for (const auto& r : *all) c.push_back(r.confidences[g]);
    std::sort(c.begin(), c.end());
    size_t best = 4;
    for (size_t i = 4; i < 8; ++i) if (c[i + 1] - c[i] > c[best + 1] - c[best]) best = i;
    policy.thresholds.push_back((c[best] + c[best + 1]) / 2);
  }
  policy.thresholds.push_back(0.0f);
  auto batched = net->Classify(x, policy);
  ASSERT_TRUE(batched.ok());
  std::set<int> exits;
  for (int i = 0; i < 12; ++i) {
    auto single = net->Classify(x.slice(0, i, i + 1), policy);
    ASSERT_TRUE(single.ok());
    const ExitResult& a = (*batched)[i];
    const ExitResult& b = (*single)[0];
    EXPECT_EQ(a.exit_layer, b.exit_layer) << i;
    EXPECT_EQ(a.class_id, b.class_id) << i;
    EXPECT_NEAR(a.confidence, b.confidence, 1e-5) << i;
    ASSERT_EQ(a.confidences.size(), b.confidences.size());
    exits.insert(a.exit_layer);
  }
  EXPECT_GE(exits.size(), 2u) << "the batch should mix exits";
}

}  // namespace
}  // namespace eenn::common
