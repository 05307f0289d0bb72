// Measured batch-1 cost of every backbone layer and exit head on this
// machine: the cost model of threshold calibration (and, later, the planner).
#ifndef EENN_COMMON_LAYER_COSTS_H_
#define EENN_COMMON_LAYER_COSTS_H_

#include <vector>

#include "common/eenn_model.h"

namespace eenn::common {

struct LayerCosts {
  std::vector<double> layer_ms;  // median ms per backbone layer
  std::vector<double> head_ms;   // median ms per exit head
  // Per-exit segments for calibration: layers after the previous exit's layer
  // up to and including this exit's layer.
  std::vector<double> SegmentMs(const std::vector<int>& exit_layers) const;
};

// Runs `reps` batch-1 passes (after `warmup`) of random inputs under
// InferenceMode, on the path Run() takes (oneDNN when the model is lowered),
// and keeps per-layer and per-head medians.
LayerCosts MeasureLayerCosts(EarlyExitNet& net, int reps = 30, int warmup = 5);

}  // namespace eenn::common

#endif  // EENN_COMMON_LAYER_COSTS_H_
