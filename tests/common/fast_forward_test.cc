// The oneDNN inference path against the dense modules: every layer output at
// every split, exit decisions, fusion limits at exits and range ends.
#include "common/fast_forward.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/eenn_model.h"
#include "tests/test_util.h"

namespace eenn::common {
namespace {

std::shared_ptr<EarlyExitNet> MakeNet(const std::string& arch, std::vector<int> exits,
                                      double width, Variant variant = Variant::kCifar) {
  ModelSpec spec;
  spec.architecture = arch;
  spec.exit_layers = std::move(exits);
  spec.width = width;
  spec.variant = variant;
  auto net = EarlyExitNet::Create(spec);
  EXPECT_TRUE(net.ok()) << net.status();
  testing::Perturb(**net, 11);
  return *net;
}

ExitPolicy Inactive(const EarlyExitNet& net) {
  ExitPolicy p;
  p.thresholds.assign(net.num_exits(), -1.0f);
  return p;
}

float MaxRelDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / (b.abs().max() + 1e-6)).item<float>();
}

// For every split k: the oneDNN head part's split tensor equals the dense
// one, and the oneDNN tail part resumes it to the same classes.
void ExpectMatchesDenseAtEverySplit(const std::shared_ptr<EarlyExitNet>& net, int64_t size) {
  ASSERT_TRUE(OneDnnAvailable());
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({2, 3, size, size});
  const int n = net->num_layers();
  const ExitPolicy policy = Inactive(*net);
  std::vector<PartialResult> dense;
  ASSERT_TRUE(net->SetOneDnn(false).ok());
  for (int k = 0; k <= n; ++k) {
    auto r = net->Run(x, 0, k, policy);
    ASSERT_TRUE(r.ok()) << r.status();
    dense.push_back(*std::move(r));
  }
  auto dense_full = net->Classify(x, policy);
  ASSERT_TRUE(dense_full.ok());
  ASSERT_TRUE(net->SetOneDnn(true).ok());
  ASSERT_TRUE(net->onednn());
  for (int k = 0; k < n; ++k) {
    auto head = net->Run(x, 0, k, policy);
    ASSERT_TRUE(head.ok()) << head.status();
    ASSERT_EQ(head->pending.size(), 2u);
    ASSERT_FALSE(head->pending_input.is_mkldnn());
    ASSERT_EQ(head->pending_input.sizes(), dense[k].pending_input.sizes()) << "split " << k;
    EXPECT_LE(MaxRelDiff(head->pending_input, dense[k].pending_input), 1e-4f)
        << net->spec().architecture << " split " << k;
    // The tail resumes the dense split tensor (a device on either path).
    auto tail = net->Run(dense[k].pending_input, k, n, policy);
    ASSERT_TRUE(tail.ok()) << tail.status();
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(tail->results[i].class_id, (*dense_full)[i].class_id) << "split " << k;
      EXPECT_NEAR(tail->results[i].confidence, (*dense_full)[i].confidence, 1e-4)
          << "split " << k;
    }
  }
}

TEST(FastForwardTest, ResNet18MatchesDenseAtEverySplit) {
  ExpectMatchesDenseAtEverySplit(MakeNet("resnet18", {}, 0.25), 32);
}

TEST(FastForwardTest, ResNet50MatchesDenseAtEverySplit) {
  ExpectMatchesDenseAtEverySplit(MakeNet("resnet50", {}, 0.125), 32);
}

TEST(FastForwardTest, ResNetWithoutBatchNormMatchesDense) {
  ExpectMatchesDenseAtEverySplit(MakeNet("resnet18_nobn", {}, 0.25), 32);
}

TEST(FastForwardTest, ImagenetStemWithMaxPoolMatchesDense) {
  ExpectMatchesDenseAtEverySplit(MakeNet("resnet18", {}, 0.125, Variant::kImagenet), 224);
}

TEST(FastForwardTest, VggWithBatchNormMatchesDenseAtEverySplit) {
  ExpectMatchesDenseAtEverySplit(MakeNet("vgg11_bn", {}, 0.25), 32);
}

TEST(FastForwardTest, VggWithoutBatchNormMatchesDense) {
  ExpectMatchesDenseAtEverySplit(MakeNet("vgg11", {}, 0.25), 32);
}

TEST(FastForwardTest, FusionStopsAtExitsAndRangeEnds) {
  // vgg11_bn: layer 0 conv, 1 BN, 2 ReLU, 3 max-pool, 4 conv, 5 BN, 6 ReLU, ...
  auto plain = MakeNet("vgg11_bn", {}, 0.25);
  ASSERT_TRUE(plain->SetOneDnn(true).ok());
  EXPECT_EQ(plain->lowered()->GroupSpan(0), 3);  // conv + BN + ReLU as one convolution
  EXPECT_EQ(plain->lowered()->GroupSpan(1), 1);
  EXPECT_EQ(plain->lowered()->GroupSpan(3), 1);  // max-pool
  // An exit on the conv output keeps the conv alone; one on the BN output
  // keeps the ReLU out of the group.
  auto exits = MakeNet("vgg11_bn", {0, 5}, 0.25);
  ASSERT_TRUE(exits->SetOneDnn(true).ok());
  EXPECT_EQ(exits->lowered()->GroupSpan(0), 1);
  EXPECT_EQ(exits->lowered()->GroupSpan(4), 2);
  // A range that ends inside a group runs the group's layers one by one.
  int last = -1;
  torch::InferenceMode guard;
  torch::Tensor x = ToOneDnn(torch::randn({1, 3, 32, 32}));
  (void)plain->lowered()->Step(0, 2, x, &last);
  EXPECT_EQ(last, 0);
  (void)plain->lowered()->Step(0, 3, x, &last);
  EXPECT_EQ(last, 2);
  // The ResNet stem (conv, BN, ReLU layers) fuses the same way.
  auto resnet = MakeNet("resnet18", {1}, 0.25);
  ASSERT_TRUE(resnet->SetOneDnn(true).ok());
  EXPECT_EQ(resnet->lowered()->GroupSpan(0), 2);
}

TEST(FastForwardTest, ExitDecisionsMatchDenseInMixedBatches) {
  auto net = MakeNet("vgg11_bn", {2, 6, 13}, 0.25);
  torch::manual_seed(5);
  torch::Tensor x = torch::randn({16, 3, 32, 32});
  // Thresholds halfway between two neighbouring dense confidences, so that
  // float rounding cannot move a sample across one, and about half the
  // batch leaves at each exit.
  ExitPolicy probe = Inactive(*net);
  probe.thresholds.assign(net->num_exits(), 2.0f);
  probe.thresholds.back() = 0.0f;
  auto all = net->Classify(x, probe);
  ASSERT_TRUE(all.ok());
  ExitPolicy policy = probe;
  std::vector<size_t> alive(all->size());
  for (size_t i = 0; i < alive.size(); ++i) alive[i] = i;
  for (int g = 0; g + 1 < net->num_exits(); ++g) {
    std::vector<float> c;
    for (size_t i : alive) c.push_back((*all)[i].confidences[g]);
    std::sort(c.begin(), c.end());
    const size_t mid = c.size() / 2;
    ASSERT_GE(mid, 1u);
    policy.thresholds[g] = 0.5f * (c[mid - 1] + c[mid]);
    std::vector<size_t> next;
    for (size_t i : alive) {
      if (!((*all)[i].confidences[g] > policy.thresholds[g])) next.push_back(i);
    }
    alive.swap(next);
  }
  ASSERT_TRUE(net->SetOneDnn(false).ok());
  auto dense = net->Classify(x, policy);
  ASSERT_TRUE(dense.ok());
  ASSERT_TRUE(net->SetOneDnn(true).ok());
  auto fast = net->Classify(x, policy);
  ASSERT_TRUE(fast.ok());
  std::vector<int> per_exit(net->num_exits(), 0);
  for (size_t i = 0; i < dense->size(); ++i) {
    EXPECT_EQ((*fast)[i].exit_index, (*dense)[i].exit_index) << "sample " << i;
    EXPECT_EQ((*fast)[i].class_id, (*dense)[i].class_id) << "sample " << i;
    EXPECT_NEAR((*fast)[i].confidence, (*dense)[i].confidence, 1e-4);
    ++per_exit[(*dense)[i].exit_index];
  }
  for (int g = 0; g < net->num_exits(); ++g) EXPECT_GT(per_exit[g], 0) << "exit " << g;
}

TEST(FastForwardTest, LoweringSnapshotsTheWeights) {
  auto net = MakeNet("resnet18", {}, 0.25);
  torch::Tensor x = torch::randn({1, 3, 32, 32});
  ExitPolicy policy = Inactive(*net);
  ASSERT_TRUE(net->SetOneDnn(true).ok());
  auto before = net->Run(x, 0, 6, policy);
  ASSERT_TRUE(before.ok());
  {
    torch::NoGradGuard g;
    for (auto& p : net->LayerModule(4)->parameters()) p.mul_(3.0);
  }
  auto stale = net->Run(x, 0, 6, policy);
  ASSERT_TRUE(stale.ok());
  EXPECT_TRUE(torch::equal(stale->pending_input, before->pending_input));
  ASSERT_TRUE(net->SetOneDnn(true).ok());  // lowered again: sees the new weights
  auto fresh = net->Run(x, 0, 6, policy);
  ASSERT_TRUE(fresh.ok());
  EXPECT_GT(MaxRelDiff(fresh->pending_input, before->pending_input), 1e-2f);
  ASSERT_TRUE(net->SetOneDnn(false).ok());
  auto dense = net->Run(x, 0, 6, policy);
  ASSERT_TRUE(dense.ok());
  EXPECT_LE(MaxRelDiff(fresh->pending_input, dense->pending_input), 1e-4f);
}

}  // namespace
}  // namespace eenn::common
