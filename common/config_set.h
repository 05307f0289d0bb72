// Load-aware exit configurations (CEED): a set of per-exit threshold
// configurations that are Pareto optimal in (accuracy, expected device
// compute, offload share), from calibration data, for eenn-device's load
// controller (common/load_controller.h) to choose from as the arrival rate
// changes. Torch-free: the inputs are plain matrices and per-layer costs.
//
// Semantics follow the runtime (common/eenn_model.h): the device runs layers
// [0, split) and the exits on them with the configuration's thresholds; a
// sample no device exit takes is offloaded, and the server (or the device's
// local fallback) finishes it with the bundle's own thresholds for the exits
// at or after the split. So a configuration only changes the thresholds of
// the device's exits; the others are the bundle's.
//
// Device compute of a sample: the layers up to the exit it leaves at plus the
// active heads evaluated on the way, or, when it is offloaded, the layers
// [0, split) plus every active device head.
//
// Sweep: for each split, the accuracy floor goes from the accuracy with every
// device exit disabled down to that minus `max_drop`, in `step`s; at each
// floor a coordinate descent over the device exits' candidate thresholds
// (quantiles of their confidences, plus disabled), warm-started from the
// previous floor's answer, minimises the expected device compute under the
// floor. The results of every split are pooled and the dominated ones
// dropped.
#ifndef EENN_COMMON_CONFIG_SET_H_
#define EENN_COMMON_CONFIG_SET_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/calibration.h"

namespace eenn::common {

struct ExitConfig {
  int split = 0;                  // the device runs layers [0, split)
  std::vector<float> thresholds;  // one per exit, final included (exits >= split: the bundle's)
  double accuracy = 0;            // on the calibration data
  double device_ms = 0;           // expected device compute per request
  double device_ms_m2 = 0;        // its second moment (ms^2)
  double offload_share = 0;       // share of requests offloaded (no device exit taken)
  // Per exit: share of requests answered there and the device compute they
  // paid (for exits at or past the split: the compute up to the split).
  std::vector<double> exit_share;
  std::vector<double> exit_device_ms;
};

struct ConfigSet {
  // The bundle it was made for: a device refuses a set for another bundle.
  std::string model_name, model_version, weights_sha256;
  std::vector<int> exit_layers;          // final last
  std::vector<float> bundle_thresholds;  // the bundle's (server side)
  double final_exit_accuracy = 0;
  std::vector<ExitConfig> configs;       // most accurate first, device compute ascending along it
};

struct ConfigSweepInput {
  // confidence/correct per sample and exit, head_cost per exit (segment_cost unused).
  CalibrationData data;
  std::vector<int> exit_layers;          // layer of each exit, final last
  std::vector<double> layer_cost;        // cost (ms) of each backbone layer
  std::vector<float> bundle_thresholds;  // the thresholds exits past the split keep
};

struct ConfigSweepOptions {
  std::vector<int> splits;  // split layers to sweep (each in [1, num_layers])
  double max_drop = 0.10;   // deepest accuracy floor below the all-disabled accuracy (fraction)
  double step = 0.0025;     // floor step (fraction)
  int quantiles = 64;       // candidate thresholds per exit
};

// Evaluates one configuration at `split`.
ExitConfig EvaluateConfig(const ConfigSweepInput& in, int split, const std::vector<float>& thresholds);

// The Pareto-optimal configurations over the sweep. InvalidArgument for
// inconsistent input, no splits or a split out of range.
absl::StatusOr<std::vector<ExitConfig>> SweepConfigs(const ConfigSweepInput& in,
                                                     const ConfigSweepOptions& options);

// Keeps the configurations no other one dominates (at least as accurate, at
// most as much device compute and offload share, better in one), most
// accurate first; among equal ones the first is kept.
std::vector<ExitConfig> ParetoFront(std::vector<ExitConfig> configs);

// configs.json: the set as a JSON document, and back. Parse: InvalidArgument
// for malformed documents or inconsistent configurations.
std::string ConfigSetToJson(const ConfigSet& set);
absl::StatusOr<ConfigSet> ConfigSetFromJson(const std::string& json);

// Reads and parses a configs.json: NotFound when the file cannot be read,
// InvalidArgument (naming the file) when it does not parse.
absl::StatusOr<ConfigSet> ReadConfigSetFile(const std::string& path);

// Reads and checks a configs.json for a bundle: FailedPrecondition when it
// was made for another model, version or weights, or for other exits;
// NotFound when the file is missing.
absl::StatusOr<ConfigSet> ReadConfigSet(const std::string& path, const std::string& model_name,
                                        const std::string& model_version, const std::string& weights_sha256,
                                        const std::vector<int>& exit_layers);
absl::Status WriteConfigSet(const std::string& path, const ConfigSet& set);

}  // namespace eenn::common

#endif  // EENN_COMMON_CONFIG_SET_H_
