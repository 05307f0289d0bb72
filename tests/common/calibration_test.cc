#include "common/calibration.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace eenn::common {
namespace {

// 100 samples, exits 0 and 1 plus the final exit (2). Samples 0-59 are easy:
// exit 0 is confident (0.95) and right. Samples 60-79: exit 0 unsure (0.4) and
// wrong, exit 1 confident (0.9) and right. Samples 80-99: exits 0 and 1 unsure
// (0.3, 0.5) and wrong; only the final exit is right.
CalibrationData Synthetic() {
  CalibrationData d;
  for (int i = 0; i < 100; ++i) {
    if (i < 60) {
      d.confidence.push_back({0.95f, 0.97f, 0.99f});
      d.correct.push_back({true, true, true});
    } else if (i < 80) {
      d.confidence.push_back({0.4f, 0.9f, 0.99f});
      d.correct.push_back({false, true, true});
    } else {
      d.confidence.push_back({0.3f, 0.5f, 0.8f});
      d.correct.push_back({false, false, true});
    }
  }
  d.segment_cost = {1.0, 1.0, 2.0};
  d.head_cost = {0.1, 0.1, 0.1};
  return d;
}

TEST(CalibrationTest, EvaluateCountsActiveHeadsOnly) {
  CalibrationData d = Synthetic();
  CalibrationResult none = EvaluateThresholds(d, {-1, -1, 0});
  EXPECT_DOUBLE_EQ(none.accuracy, 1.0);
  EXPECT_NEAR(none.expected_cost, 4.1, 1e-9);  // all layers + the final head
  EXPECT_NEAR(none.full_cost, 4.1, 1e-9);
  CalibrationResult both = EvaluateThresholds(d, {0.5f, 0.6f, 0});
  // 60 leave at exit 0 (cost 1.1), 20 at exit 1 (2.2), 20 at the end (4.3).
  EXPECT_NEAR(both.expected_cost, 0.6 * 1.1 + 0.2 * 2.2 + 0.2 * 4.3, 1e-12);
  EXPECT_DOUBLE_EQ(both.accuracy, 1.0);
  EXPECT_DOUBLE_EQ(both.exit_share[0], 0.6);
  // Strictly greater: a threshold equal to the confidence does not fire.
  CalibrationResult eq = EvaluateThresholds(d, {0.95f, -1, 0});
  EXPECT_DOUBLE_EQ(eq.exit_share[0], 0.0);
}

TEST(CalibrationTest, StandardErrorsOfAccuracyAndDrop) {
  CalibrationData d = Synthetic();
  // Every sample at the final exit: the drop is exactly 0, with no spread.
  CalibrationResult none = EvaluateThresholds(d, {-1, -1, 0});
  EXPECT_DOUBLE_EQ(none.accuracy_stderr, 0.0);  // accuracy 1
  EXPECT_DOUBLE_EQ(none.drop_stderr, 0.0);
  // Exit 0 at 0.35: samples 60-79 leave there wrongly (the final was right): 20 of
  // 100 lost, none gained. Accuracy 0.8: stderr sqrt(0.8 * 0.2 / 100) = 0.04. The
  // per-sample differences are 20 ones and 80 zeros: sample variance
  // (20 - 100 * 0.2^2) / 99, over 100.
  CalibrationResult some = EvaluateThresholds(d, {0.35f, -1, 0});
  EXPECT_DOUBLE_EQ(some.accuracy, 0.8);
  EXPECT_NEAR(some.accuracy_stderr, 0.04, 1e-12);
  EXPECT_NEAR(some.drop_stderr, std::sqrt((20 - 100 * 0.04) / 99.0 / 100), 1e-12);
  // A gain offsets a loss in the mean but adds to the spread: make sample 80's
  // exit 0 right while its final is wrong (20 lost, 1 gained).
  d.correct[80] = {true, false, false};
  d.confidence[80][0] = 0.36f;
  CalibrationResult mixed = EvaluateThresholds(d, {0.35f, -1, 0});
  const double mean = (20.0 - 1.0) / 100;
  EXPECT_NEAR(mixed.final_exit_accuracy - mixed.accuracy, mean, 1e-12);
  EXPECT_NEAR(mixed.drop_stderr, std::sqrt((21 - 100 * mean * mean) / 99.0 / 100), 1e-12);
}

TEST(CalibrationTest, CandidatesSitBetweenConfidences) {
  CalibrationData d;
  for (int i = 0; i < 1000; ++i) {
    const float c = 0.5f + 0.0005f * (i % 997);  // 997 distinct values, a few ties
    d.confidence.push_back({c, 0.99f});
    d.correct.push_back({i % 3 != 0, true});
  }
  const std::vector<float> cand = ThresholdCandidates(d, 0, 200, 1.0 / 12);
  ASSERT_GT(cand.size(), 20u);
  EXPECT_EQ(cand.front(), -1.0f);
  EXPECT_TRUE(std::is_sorted(cand.begin(), cand.end()));
  EXPECT_EQ(std::adjacent_find(cand.begin(), cand.end()), cand.end());
  std::vector<float> seen;
  for (const auto& row : d.confidence) seen.push_back(row[0]);
  std::sort(seen.begin(), seen.end());
  for (size_t k = 1; k < cand.size(); ++k) {
    const float v = cand[k];
    const auto above = std::upper_bound(seen.begin(), seen.end(), v);
    if (above == seen.end()) {
      EXPECT_EQ(v, seen.back());  // the largest confidence lets nothing through
      continue;
    }
    ASSERT_NE(above, seen.begin());
    const float below = *(above - 1);
    // Strictly between two confidences seen, halfway (float rounding aside).
    EXPECT_GT(v, below);
    EXPECT_LT(v, *above);
    EXPECT_NEAR(v, (below + *above) / 2, 1e-6);
  }
  // Quantiles over the samples, denser towards the confident end: half the
  // candidates lie in the top eighth of the samples.
  const float top_eighth = seen[seen.size() * 7 / 8];
  const auto in_top = std::count_if(cand.begin(), cand.end(), [&](float v) { return v >= top_eighth; });
  EXPECT_GE(2 * in_top, static_cast<long>(cand.size()) - 1);
  // A single sample: disabled, or its own confidence (nothing above it).
  CalibrationData one;
  one.confidence = {{0.7f, 0.9f}};
  one.correct = {{true, true}};
  EXPECT_EQ(ThresholdCandidates(one, 0, 10, 1.6), (std::vector<float>{-1.0f, 0.7f}));
}

TEST(CalibrationTest, FindsTheKnownOptimumWithoutAccuracyLoss) {
  auto r = Calibrate(Synthetic(), CalibrationTarget{0.0, -1});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->accuracy, 1.0);
  EXPECT_NEAR(r->expected_cost, 0.6 * 1.1 + 0.2 * 2.2 + 0.2 * 4.3, 1e-9);
  EXPECT_GE(r->thresholds[0], 0.4f);
  EXPECT_LT(r->thresholds[0], 0.95f);
  EXPECT_GE(r->thresholds[1], 0.5f);
  EXPECT_LT(r->thresholds[1], 0.9f);
  EXPECT_EQ(r->thresholds[2], 0.0f);
}

TEST(CalibrationTest, SpendsTheAllowedDropOnCheaperExits) {
  // Allowing a 20-point drop lets the 20 hard samples leave early (wrongly) too.
  auto r = Calibrate(Synthetic(), CalibrationTarget{0.20, -1});
  ASSERT_TRUE(r.ok());
  EXPECT_GE(r->accuracy, 0.80 - 1e-12);
  EXPECT_LT(r->expected_cost, 0.6 * 1.1 + 0.2 * 2.2 + 0.2 * 4.3);
  // An absolute floor works the same way.
  auto f = Calibrate(Synthetic(), CalibrationTarget{0.0, 0.9});
  ASSERT_TRUE(f.ok());
  EXPECT_GE(f->accuracy, 0.9 - 1e-12);
}

TEST(CalibrationTest, RefusesBadData) {
  EXPECT_FALSE(Calibrate(CalibrationData{}, {}).ok());
  CalibrationData d = Synthetic();
  d.head_cost.pop_back();
  EXPECT_FALSE(Calibrate(d, {}).ok());
  EXPECT_EQ(Calibrate(Synthetic(), CalibrationTarget{0.0, 1.01}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace eenn::common
