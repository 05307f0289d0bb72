// The bundle manifest: the human-readable description of a trained model
// bundle (manifest.json next to the weights file). Torch-free, so the daemons'
// control paths and the fuzzers can parse manifests without LibTorch.
//
// A bundle directory holds:
//   manifest.json   this struct as JSON (see README "Model bundles")
//   weights.pt      the parameters and buffers, a LibTorch-serialised
//                   name -> tensor dictionary (state-dict names)
#ifndef EENN_COMMON_MANIFEST_H_
#define EENN_COMMON_MANIFEST_H_

#include <array>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_spec.h"

namespace eenn::common {

inline constexpr int kManifestFormatVersion = 1;
inline constexpr char kManifestFile[] = "manifest.json";
inline constexpr char kDefaultWeightsFile[] = "weights.pt";

// How an image becomes the network input.
enum class ResizeMode {
  kStretch,     // resize both sides to the input size
  kCenterCrop,  // resize the shorter side to size / crop_pct, then centre-crop
};

struct InputSpec {
  std::vector<int64_t> shape = {3, 32, 32};  // (C, H, W) of one sample; C is 1 or 3
  std::array<float, 3> mean = {0.0f, 0.0f, 0.0f};  // per channel, on [0, 1] pixels
  std::array<float, 3> std = {1.0f, 1.0f, 1.0f};   // per channel, > 0
  ResizeMode resize = ResizeMode::kStretch;
  double crop_pct = 0.875;  // only for kCenterCrop, in (0, 1]
};

struct BundleManifest {
  int format_version = kManifestFormatVersion;
  std::string model_name;     // served name, e.g. "cifar10-resnet18"
  std::string model_version;  // served version, e.g. "1"
  ModelSpec spec;             // architecture, variant, width, classes, exits, head
  std::vector<std::string> class_names;  // spec.num_classes names, label order
  InputSpec input;
  // One threshold per exit (final included); negative disables an exit.
  std::vector<float> thresholds;
  std::string confidence = "max";  // "max" or "entropy"
  std::string weights_file = kDefaultWeightsFile;
  std::string weights_sha256;  // lowercase hex SHA-256 of the weights file
  // Free-form provenance (training command, calibration report), kept as JSON text.
  std::string metadata_json = "{}";
};

// Parses and validates manifest JSON. InvalidArgument naming the field for
// malformed JSON, a missing or mistyped field, or an inconsistent value
// (class names vs. num_classes, threshold count vs. exits, bad mean/std...).
// The exit list is normalised: the final layer is not known here, so the
// threshold count is checked against the exits in the manifest, which must
// include the final exit.
absl::StatusOr<BundleManifest> ParseManifest(absl::string_view json_text);

// Serialises a manifest as indented JSON; ParseManifest(SerializeManifest(m))
// round-trips.
std::string SerializeManifest(const BundleManifest& manifest);

// Reads and validates `dir`/manifest.json. NotFound when the file is missing,
// InvalidArgument for a malformed manifest (the message names the field);
// messages start with "bundle '<dir>': ".
absl::StatusOr<BundleManifest> ReadManifest(const std::string& dir);

// What a daemon serves, torch-free: built from a loaded bundle by
// Describe() (bundle.h) and shared by the services, the planner and metrics.
struct ServedModel {
  std::string name;
  std::string version;
  std::string architecture;
  std::string weights_sha256;
  int num_layers = 0;
  std::vector<int> exit_layers;    // final exit last
  std::vector<float> thresholds;   // one per exit
  std::vector<std::string> class_names;
  std::vector<int64_t> input_shape;  // (C, H, W)
  // Per-sample shape of the input of layer k, k in [0, num_layers].
  std::vector<std::vector<int64_t>> layer_input_shapes;
};

}  // namespace eenn::common

#endif  // EENN_COMMON_MANIFEST_H_
