// Every exit's prediction and confidence for a set of dataset samples: the
// raw material of per-exit accuracy tables and threshold calibration.
#ifndef EENN_COMMON_EXIT_OUTPUTS_H_
#define EENN_COMMON_EXIT_OUTPUTS_H_

#include <vector>

#include "common/calibration.h"
#include "common/dataset.h"
#include "common/eenn_model.h"
#include "common/manifest.h"

namespace eenn::common {

struct ExitOutputs {
  std::vector<std::vector<float>> confidence;  // [sample][exit]
  std::vector<std::vector<int64_t>> predicted; // [sample][exit]
  std::vector<int64_t> labels;                 // [sample]
  // Accuracy of each exit on its own.
  std::vector<double> ExitAccuracy() const;
  // As calibration data (correctness matrix), with the given costs.
  CalibrationData ToCalibrationData(std::vector<double> segment_cost, std::vector<double> head_cost) const;
};

// Runs all exits over `indices` in batches (eval mode, no augmentation).
ExitOutputs CollectExitOutputs(EarlyExitNet& net, const ImageDataset& data,
                               const std::vector<int64_t>& indices, const InputSpec& input,
                               ConfidenceFunction confidence, int batch = 250);

}  // namespace eenn::common

#endif  // EENN_COMMON_EXIT_OUTPUTS_H_
