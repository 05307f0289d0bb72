#include "common/calibration.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace eenn::common {

size_t ExitTaken(const CalibrationData& data, size_t i, const std::vector<float>& thresholds) {
  const size_t g_count = data.confidence[i].size();  // final exit included
  for (size_t g = 0; g + 1 < g_count; ++g) {
    if (thresholds[g] >= 0 && data.confidence[i][g] > thresholds[g]) return g;
  }
  return g_count - 1;
}

CalibrationResult EvaluateThresholds(const CalibrationData& d, const std::vector<float>& t) {
  const size_t n = d.confidence.size();
  const size_t g_count = d.segment_cost.size();
  CalibrationResult r;
  r.thresholds = t;
  r.exit_share.assign(g_count, 0.0);
  // Cost of leaving at exit g: layers so far plus active heads so far.
  std::vector<double> cost_at(g_count, 0.0);
  double layers = 0, heads = 0;
  for (size_t g = 0; g < g_count; ++g) {
    layers += d.segment_cost[g];
    const bool active = g + 1 == g_count || t[g] >= 0;
    if (active) heads += d.head_cost[g];
    cost_at[g] = layers + heads;
    r.full_cost += d.segment_cost[g];
  }
  r.full_cost += d.head_cost.back();
  size_t correct = 0, final_correct = 0;
  size_t gained = 0, lost = 0;  // samples an early exit answered rightly / wrongly against the final's
  double cost = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t exit = ExitTaken(d, i, t);
    const bool right = d.correct[i][exit], final_right = d.correct[i][g_count - 1];
    correct += right;
    final_correct += final_right;
    gained += right && !final_right;
    lost += final_right && !right;
    cost += cost_at[exit];
    r.exit_share[exit] += 1.0;
  }
  for (double& s : r.exit_share) s /= std::max<size_t>(n, 1);
  r.accuracy = n ? double(correct) / n : 0;
  r.final_exit_accuracy = n ? double(final_correct) / n : 0;
  r.expected_cost = n ? cost / n : 0;
  if (n > 1) {
    r.accuracy_stderr = std::sqrt(r.accuracy * (1 - r.accuracy) / n);
    // Per-sample differences are +1 (lost), -1 (gained) or 0.
    const double mean = (double(lost) - double(gained)) / n;
    const double var = (double(lost + gained) - n * mean * mean) / (n - 1);
    r.drop_stderr = std::sqrt(std::max(var, 0.0) / n);
  }
  return r;
}

std::vector<float> ThresholdCandidates(const CalibrationData& d, size_t exit, int count, double step) {
  std::vector<float> c;
  c.reserve(d.confidence.size());
  for (const auto& row : d.confidence) c.push_back(row[exit]);
  std::sort(c.begin(), c.end());
  std::vector<float> cand = {-1.0f};
  if (c.empty()) return cand;
  for (int q = 0; q < count; ++q) {
    // The quantile over the samples (ties count), then the next larger value.
    const double p = 1.0 - std::pow(0.5, q * step);
    const size_t idx = std::min(c.size() - 1, static_cast<size_t>(p * c.size()));
    float v = c[idx];
    const auto next = std::upper_bound(c.begin(), c.end(), v);
    if (next != c.end()) {
      // Midway to it, unless float rounding lands on either.
      const float mid = static_cast<float>((static_cast<double>(v) + *next) / 2);
      if (mid > v && mid < *next) v = mid;
    }
    cand.push_back(v);
  }
  std::sort(cand.begin(), cand.end());
  cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
  return cand;
}

absl::StatusOr<CalibrationResult> Calibrate(const CalibrationData& d, const CalibrationTarget& target) {
  const size_t g_count = d.segment_cost.size();
  if (d.confidence.empty() || g_count == 0 || d.head_cost.size() != g_count ||
      d.correct.size() != d.confidence.size()) {
    return absl::InvalidArgumentError("calibration data is empty or inconsistent");
  }
  for (size_t i = 0; i < d.confidence.size(); ++i) {
    if (d.confidence[i].size() != g_count || d.correct[i].size() != g_count) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", i, " does not have ", g_count, " exits"));
    }
  }
  std::vector<float> t(g_count, -1.0f);
  t.back() = 0.0f;
  CalibrationResult best = EvaluateThresholds(d, t);
  const double floor = target.min_accuracy >= 0 ? target.min_accuracy
                                                : best.final_exit_accuracy - target.max_drop;
  if (best.accuracy < floor - 1e-12) {
    return absl::InvalidArgumentError(absl::StrCat("the final exit alone reaches ", best.accuracy,
                                                   ", below the requested floor ", floor));
  }
  // Candidates per exit: 200 quantiles of its confidences, plus disabled.
  std::vector<std::vector<float>> candidates(g_count);
  for (size_t g = 0; g + 1 < g_count; ++g) candidates[g] = ThresholdCandidates(d, g, 200, 1.0 / 12);
  // Coordinate descent: each pass tries every candidate of every exit and
  // keeps a change when it lowers the cost without breaking the floor.
  for (int pass = 0; pass < 8; ++pass) {
    bool improved = false;
    for (size_t g = 0; g + 1 < g_count; ++g) {
      for (float v : candidates[g]) {
        std::vector<float> trial = best.thresholds;
        trial[g] = v;
        CalibrationResult r = EvaluateThresholds(d, trial);
        if (r.accuracy + 1e-12 >= floor &&
            (r.expected_cost < best.expected_cost - 1e-12 ||
             (std::abs(r.expected_cost - best.expected_cost) <= 1e-12 && r.accuracy > best.accuracy))) {
          best = r;
          improved = true;
        }
      }
    }
    if (!improved) break;
  }
  return best;
}

}  // namespace eenn::common
