// Threshold calibration: choose per-exit thresholds that minimise the
// expected compute per sample subject to an accuracy floor, from per-exit
// confidences measured on a validation split. Torch-free: the inputs are
// plain matrices, so the search is tested on synthetic data.
//
// Cost model: a sample that leaves at exit g paid for every layer up to
// exit g's layer plus every *active* head evaluated on the way (inactive
// exits, threshold < 0, cost nothing).
#ifndef EENN_COMMON_CALIBRATION_H_
#define EENN_COMMON_CALIBRATION_H_

#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"

namespace eenn::common {

struct CalibrationData {
  // [sample][exit] confidence and correctness, final exit included.
  std::vector<std::vector<float>> confidence;
  std::vector<std::vector<bool>> correct;
  // Cost (e.g. ms at batch 1) of the layers between exit g-1's layer and exit
  // g's layer (for g = 0: from the input), and of head g itself.
  std::vector<double> segment_cost;
  std::vector<double> head_cost;
};

struct CalibrationTarget {
  // Exactly one of these: the largest allowed accuracy drop against the final
  // exit (points in [0, 1], e.g. 0.01), or an absolute accuracy floor.
  double max_drop = 0.01;
  double min_accuracy = -1;  // used when >= 0
};

struct CalibrationResult {
  std::vector<float> thresholds;     // one per exit, final = 0
  double accuracy = 0;               // on the calibration data
  double final_exit_accuracy = 0;    // final exit alone
  double expected_cost = 0;          // mean cost per sample under `thresholds`
  double full_cost = 0;              // cost with every early exit disabled
  std::vector<double> exit_share;    // share of samples leaving at each exit
  // Sampling uncertainty of the two estimates on this data (standard errors, as
  // fractions): the accuracy is a binomial proportion, sqrt(a (1 - a) / n); the
  // drop against the final exit is a paired difference (per sample: final right
  // minus early-exit answer right), its sample standard deviation over sqrt(n).
  // The drop's is far smaller: most samples agree. Out of sample, the accuracy
  // moves with the final exit's own error; the drop is the better-held promise.
  // Sampling error only, for these thresholds (normal approximation: 0 when no
  // sample differs); thresholds chosen on the same data make both optimistic.
  double accuracy_stderr = 0;
  double drop_stderr = 0;
};

// The exit sample `i` leaves at under `thresholds`: the first early exit whose
// threshold is active (>= 0) and strictly below its confidence, else the final.
size_t ExitTaken(const CalibrationData& data, size_t i, const std::vector<float>& thresholds);

// Evaluates thresholds on the data.
CalibrationResult EvaluateThresholds(const CalibrationData& data, const std::vector<float>& thresholds);

// Candidate thresholds of early exit `exit`: "disabled" (-1) and `count`
// quantiles of its confidences on the data, quantile q at 1 - 0.5^(q * step)
// (denser towards the confident end, where the useful thresholds live). Each
// sits midway between the quantile's confidence and the next larger one seen,
// so the samples it lets through are the same as at that confidence, with a
// margin: a sample's confidence computed another way (batch 1 instead of a
// batch) does not cross it by rounding. Ascending, without duplicates.
std::vector<float> ThresholdCandidates(const CalibrationData& data, size_t exit, int count, double step);

// Coordinate descent over per-exit candidate thresholds (ThresholdCandidates:
// quantiles of each exit's confidences, plus "disabled"), from all-disabled, keeping the
// accuracy floor. InvalidArgument for empty or inconsistent data or a target
// that the final exit alone cannot meet.
absl::StatusOr<CalibrationResult> Calibrate(const CalibrationData& data,
                                            const CalibrationTarget& target);

}  // namespace eenn::common

#endif  // EENN_COMMON_CALIBRATION_H_
