// Torch-free description of an early-exit network: which backbone, which
// input variant, how wide, which exits, and how the classifier heads look.
//
// A ModelSpec is what a bundle manifest stores and what the zoo builds from
// (see zoo.h). Nothing here includes LibTorch, so the manifest parser, the
// planner and the daemons' validation code can use it cheaply.
#ifndef EENN_COMMON_MODEL_SPEC_H_
#define EENN_COMMON_MODEL_SPEC_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace eenn::common {

// Input variant of a built-in backbone.
//   kCifar:    32x32 input; ResNet stem is a 3x3 stride-1 conv and its
//              max-pool is an identity layer (which keeps index 3).
//   kImagenet: 224x224 input; ResNet stem is a 7x7 stride-2 conv followed by a
//              3x3 stride-2 max-pool.
enum class Variant { kCifar, kImagenet };

absl::string_view VariantName(Variant v);
absl::StatusOr<Variant> ParseVariant(absl::string_view name);

// Shape of a classifier head (an exit, or the backbone's final classifier).
enum class HeadKind {
  // global pool -> dropout -> Linear(in, C), or Linear(in, hidden) -> ReLU ->
  // Linear(hidden, C) when hidden > 0. The reference's ClassifierHead.
  kPoolLinear,
  // The reference's VGG ClassifierModule: pool up to at least 7x7, Conv 7x7
  // (in -> hidden), ReLU, Dropout, Conv 1x1 (hidden -> hidden), ReLU, global
  // pool, Dropout, Linear(hidden, C). Very large; meant for ImageNet VGG.
  kConvMlp,
};

absl::string_view HeadKindName(HeadKind k);
absl::StatusOr<HeadKind> ParseHeadKind(absl::string_view name);

struct HeadConfig {
  HeadKind kind = HeadKind::kPoolLinear;  // layout of the head
  int64_t hidden = 0;                     // hidden width; 0 = no hidden layer
  double dropout = 0.0;                   // drop rate before the last Linear
  bool operator==(const HeadConfig& o) const {
    return kind == o.kind && hidden == o.hidden && dropout == o.dropout;
  }
};

// What to build. Heads always output logits; confidences are computed from
// their softmax by the runtime (eenn never puts a softmax inside a head).
struct ModelSpec {
  std::string architecture = "resnet18";  // a name registered in the zoo
  Variant variant = Variant::kCifar;      // input variant
  int64_t num_classes = 10;               // classes of every head
  double width = 1.0;                     // channel multiplier (edge models < 1)
  // Backbone layer indices that carry an exit head, ascending. The last
  // backbone layer (the final classifier) is always an exit and is appended
  // when absent.
  std::vector<int> exit_layers;
  // Head layout for exits and final classifier; unset fields take the
  // architecture's default (see zoo.h).
  bool head_override = false;  // true: use `head` instead of the default
  HeadConfig head;
  // Early exits (not the final classifier) with pooled heads average-pool
  // their input to exit_pool x exit_pool instead of 1x1 and classify the
  // C * exit_pool^2 features: spatial layout survives, which shallow exits on
  // wide maps need, for a few thousand extra multiply-adds. 1 = the
  // reference's global pooling.
  int64_t exit_pool = 1;
};

// Static facts about one backbone layer.
struct LayerInfo {
  int index = 0;           // position in the backbone
  std::string class_name;  // e.g. "Conv2d", "ResidualBottleneck" (profile keys)
  int64_t feature_dim = 0; // channels of the layer's output
  // Output shape of the layer for one sample (C, H, W), filled in by the
  // runtime from a probe forward pass at model creation.
  std::vector<int64_t> output_shape;
};

// The answer for one sample.
struct ExitResult {
  int exit_index = -1;  // position in exit_layers()
  int exit_layer = -1;  // backbone layer index of that exit
  int64_t class_id = -1;
  float confidence = 0.0f;         // confidence at the answering exit
  std::vector<float> confidences;  // every evaluated exit's confidence, in order
};

}  // namespace eenn::common

#endif  // EENN_COMMON_MODEL_SPEC_H_
