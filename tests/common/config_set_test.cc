// Load-aware exit configurations: evaluation of one configuration by hand,
// the Pareto sweep on synthetic calibration data, configs.json round trip
// and the refusals of a set made for another bundle.
#include "common/config_set.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

namespace eenn::common {
namespace {

// Exits at layers 1, 3 and the final one at 5 (6 layers of 1 ms, heads of
// 0.1 ms). Confidence of exit g grows with its depth; a sample is correct at
// an exit with a probability that grows with its confidence there.
ConfigSweepInput Synthetic(int n, unsigned seed) {
  ConfigSweepInput in;
  in.exit_layers = {1, 3, 5};
  in.layer_cost = {1, 1, 1, 1, 1, 1};
  in.data.head_cost = {0.1, 0.1, 0.1};
  in.data.segment_cost = {2, 2, 2};
  in.bundle_thresholds = {0.9f, 0.8f, 0.0f};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  for (int i = 0; i < n; ++i) {
    const double difficulty = u(rng);
    std::vector<float> conf;
    std::vector<bool> ok;
    for (int g = 0; g < 3; ++g) {
      const double skill = 0.35 + 0.25 * g;
      const double c = std::clamp(1.0 - difficulty * (1.2 - skill) + 0.1 * (u(rng) - 0.5), 0.0, 1.0);
      conf.push_back(static_cast<float>(c));
      ok.push_back(u(rng) < 0.3 + 0.7 * c);
    }
    in.data.confidence.push_back(conf);
    in.data.correct.push_back(ok);
  }
  return in;
}

TEST(ConfigSetTest, EvaluatesOneConfigurationByHand) {
  ConfigSweepInput in;
  in.exit_layers = {1, 3, 5};
  in.layer_cost = {1, 2, 1, 1, 1, 1};
  in.data.head_cost = {0.5, 0.25, 0.1};
  in.bundle_thresholds = {0.9f, 0.5f, 0.0f};
  // Four samples: confidences at exits 0, 1, final; correctness likewise.
  in.data.confidence = {{0.95f, 0.9f, 0.9f}, {0.2f, 0.9f, 0.9f}, {0.2f, 0.3f, 0.9f}, {0.85f, 0.2f, 0.9f}};
  in.data.correct = {{true, true, true}, {false, true, true}, {false, false, false}, {false, true, true}};
  // Split 4: exits 0 and 1 on the device with thresholds 0.8 and 0.6.
  ExitConfig c = EvaluateConfig(in, 4, {0.8f, 0.6f, 0.0f});
  // Sample 0 and 3 leave at exit 0 (3 is wrong there), 1 at exit 1, 2 is offloaded.
  EXPECT_DOUBLE_EQ(c.accuracy, 0.5);
  EXPECT_DOUBLE_EQ(c.exit_share[0], 0.5);
  EXPECT_DOUBLE_EQ(c.exit_share[1], 0.25);
  EXPECT_DOUBLE_EQ(c.exit_share[2], 0.25);
  EXPECT_DOUBLE_EQ(c.offload_share, 0.25);
  EXPECT_DOUBLE_EQ(c.exit_device_ms[0], 3.5);          // layers 0-1 + head 0
  EXPECT_DOUBLE_EQ(c.exit_device_ms[1], 5.75);         // layers 0-3 + heads 0, 1
  EXPECT_DOUBLE_EQ(c.exit_device_ms[2], 5.75);         // layers 0-3 (split 4) + heads 0, 1
  EXPECT_DOUBLE_EQ(c.device_ms, 0.5 * 3.5 + 0.5 * 5.75);
  EXPECT_DOUBLE_EQ(c.device_ms_m2, 0.5 * 3.5 * 3.5 + 0.5 * 5.75 * 5.75);

  // Split 2: only exit 0 on the device; exit 1 keeps the bundle's 0.5 whatever is asked.
  ExitConfig s2 = EvaluateConfig(in, 2, {-1.0f, 0.99f, 0.0f});
  EXPECT_FLOAT_EQ(s2.thresholds[1], 0.5f);
  EXPECT_FLOAT_EQ(s2.thresholds[0], -1.0f);
  EXPECT_DOUBLE_EQ(s2.offload_share, 1.0);
  EXPECT_DOUBLE_EQ(s2.device_ms, 3.0);                 // layers 0-1, no active device head
  EXPECT_DOUBLE_EQ(s2.accuracy, 0.75);                 // 0, 1 at exit 1 (0.9 > 0.5); 2, 3 final

  // Split 6 (everything on the device): nothing offloaded, final head paid.
  ExitConfig s6 = EvaluateConfig(in, 6, {-1.0f, -1.0f, 0.0f});
  EXPECT_DOUBLE_EQ(s6.offload_share, 0.0);
  EXPECT_DOUBLE_EQ(s6.device_ms, 7.1);
}

TEST(ConfigSetTest, SweepIsParetoOptimalAndTradesAccuracyForCompute) {
  ConfigSweepInput in = Synthetic(3000, 7);
  ConfigSweepOptions o;
  o.splits = {2, 4};
  o.max_drop = 0.08;
  auto front = SweepConfigs(in, o);
  ASSERT_TRUE(front.ok()) << front.status();
  ASSERT_GE(front->size(), 4u);
  // No configuration is dominated by another, and the list is most accurate first.
  for (size_t i = 0; i < front->size(); ++i) {
    const ExitConfig& a = (*front)[i];
    if (i > 0) {
      EXPECT_LE(a.accuracy, (*front)[i - 1].accuracy);
    }
    for (size_t j = 0; j < front->size(); ++j) {
      if (i == j) continue;
      const ExitConfig& b = (*front)[j];
      const bool dominated = b.accuracy >= a.accuracy && b.device_ms <= a.device_ms &&
                             b.offload_share <= a.offload_share &&
                             (b.accuracy > a.accuracy || b.device_ms < a.device_ms ||
                              b.offload_share < a.offload_share);
      EXPECT_FALSE(dominated) << "config " << i << " dominated by " << j;
    }
  }
  // Re-evaluating a stored configuration gives the same figures.
  for (const ExitConfig& c : *front) {
    ExitConfig again = EvaluateConfig(in, c.split, c.thresholds);
    EXPECT_DOUBLE_EQ(again.accuracy, c.accuracy);
    EXPECT_DOUBLE_EQ(again.device_ms, c.device_ms);
  }
  // The trade-off: within one split, a less accurate configuration never costs
  // more device compute; the cheapest is much cheaper than the most accurate,
  // within the allowed drop.
  size_t longest = 0;
  for (int split : o.splits) {
    std::vector<ExitConfig> same;
    for (const ExitConfig& c : *front) {
      if (c.split == split) same.push_back(c);
    }
    longest = std::max(longest, same.size());
    for (size_t i = 1; i < same.size(); ++i) EXPECT_LE(same[i].device_ms, same[i - 1].device_ms + 1e-9);
  }
  EXPECT_GE(longest, 3u);
  const ExitConfig& top = front->front();
  const ExitConfig& cheapest = *std::min_element(front->begin(), front->end(), [](const auto& a, const auto& b) {
    return a.device_ms < b.device_ms;
  });
  EXPECT_LT(cheapest.device_ms, 0.8 * top.device_ms);
  EXPECT_GE(cheapest.accuracy, top.accuracy - o.max_drop - 1e-9);
  // Every device exit off (the bundle's server side alone) is in the pool: nothing above is less accurate.
  EXPECT_GE(top.accuracy, EvaluateConfig(in, 2, {-1.0f, -1.0f, 0.0f}).accuracy);
  EXPECT_GE(top.accuracy, EvaluateConfig(in, 4, {-1.0f, -1.0f, 0.0f}).accuracy);
}

TEST(ConfigSetTest, ParetoFrontDropsDominatedAndDuplicates) {
  auto make = [](double acc, double ms, double off) {
    ExitConfig c;
    c.accuracy = acc;
    c.device_ms = ms;
    c.offload_share = off;
    return c;
  };
  auto front = ParetoFront({make(0.8, 5, 0.5), make(0.9, 10, 0.5), make(0.8, 6, 0.5), make(0.9, 10, 0.5),
                            make(0.7, 5, 0.2), make(0.85, 4, 0.6)});
  ASSERT_EQ(front.size(), 4u);
  EXPECT_DOUBLE_EQ(front[0].accuracy, 0.9);
  EXPECT_DOUBLE_EQ(front[1].accuracy, 0.85);
  EXPECT_DOUBLE_EQ(front[2].accuracy, 0.8);
  EXPECT_DOUBLE_EQ(front[2].device_ms, 5);
  EXPECT_DOUBLE_EQ(front[3].accuracy, 0.7);
}

TEST(ConfigSetTest, RefusesBadSweeps) {
  ConfigSweepInput in = Synthetic(100, 1);
  ConfigSweepOptions o;
  EXPECT_EQ(SweepConfigs(in, o).status().code(), absl::StatusCode::kInvalidArgument);  // no split
  o.splits = {7};
  EXPECT_EQ(SweepConfigs(in, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.splits = {4};
  in.layer_cost.pop_back();
  EXPECT_EQ(SweepConfigs(in, o).status().code(), absl::StatusCode::kInvalidArgument);
}

ConfigSet SmallSet() {
  ConfigSweepInput in = Synthetic(500, 3);
  ConfigSweepOptions o;
  o.splits = {4};
  o.max_drop = 0.05;
  ConfigSet set;
  set.model_name = "toy";
  set.model_version = "2";
  set.weights_sha256 = "abc123";
  set.exit_layers = in.exit_layers;
  set.bundle_thresholds = in.bundle_thresholds;
  set.final_exit_accuracy = 0.8;
  set.configs = *SweepConfigs(in, o);
  return set;
}

TEST(ConfigSetTest, JsonRoundTripAndRefusalsForAnotherBundle) {
  const ConfigSet set = SmallSet();
  ASSERT_GE(set.configs.size(), 2u);
  const std::string path = ::testing::TempDir() + "/configs_test.json";
  ASSERT_TRUE(WriteConfigSet(path, set).ok());
  auto back = ReadConfigSet(path, "toy", "2", "abc123", {1, 3, 5});
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->configs.size(), set.configs.size());
  for (size_t i = 0; i < set.configs.size(); ++i) {
    EXPECT_EQ(back->configs[i].split, set.configs[i].split);
    EXPECT_EQ(back->configs[i].thresholds, set.configs[i].thresholds);
    EXPECT_DOUBLE_EQ(back->configs[i].accuracy, set.configs[i].accuracy);
    EXPECT_DOUBLE_EQ(back->configs[i].device_ms, set.configs[i].device_ms);
    EXPECT_DOUBLE_EQ(back->configs[i].device_ms_m2, set.configs[i].device_ms_m2);
    EXPECT_DOUBLE_EQ(back->configs[i].offload_share, set.configs[i].offload_share);
    EXPECT_EQ(back->configs[i].exit_share, set.configs[i].exit_share);
    EXPECT_EQ(back->configs[i].exit_device_ms, set.configs[i].exit_device_ms);
  }
  EXPECT_EQ(back->bundle_thresholds, set.bundle_thresholds);

  EXPECT_EQ(ReadConfigSet(path, "other", "2", "abc123", {1, 3, 5}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadConfigSet(path, "toy", "3", "abc123", {1, 3, 5}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadConfigSet(path, "toy", "2", "ffff", {1, 3, 5}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadConfigSet(path, "toy", "2", "abc123", {1, 5}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadConfigSet(path + ".missing", "toy", "2", "abc123", {1, 3, 5}).status().code(),
            absl::StatusCode::kNotFound);
  std::remove(path.c_str());

  // Malformed or inconsistent documents.
  EXPECT_FALSE(ConfigSetFromJson("[]").ok());
  EXPECT_FALSE(ConfigSetFromJson("{\"format\": \"eenn-configs/1\"}").ok());
  ConfigSet bad = set;
  bad.configs[0].exit_share[0] += 0.5;  // shares no longer sum to 1
  EXPECT_FALSE(ConfigSetFromJson(ConfigSetToJson(bad)).ok());
  bad = set;
  std::swap(bad.configs.front(), bad.configs.back());  // least accurate first
  EXPECT_FALSE(ConfigSetFromJson(ConfigSetToJson(bad)).ok());
  bad = set;
  bad.configs[0].split = 9;
  EXPECT_FALSE(ConfigSetFromJson(ConfigSetToJson(bad)).ok());
}

}  // namespace
}  // namespace eenn::common
