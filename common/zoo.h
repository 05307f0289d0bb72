// The model zoo: backbones as ordered lists of "layers", indexed exactly as
// the reference PyTorch EENN implementation indexes them, so exit and split
// indices mean the same thing to users coming from it.
//
//   ResNet-18/34 (basic blocks) and ResNet-50/101 (bottlenecks): layers 0-3
//   are the stem's conv, batch norm, ReLU and max-pool (an identity layer in
//   the CIFAR variant, keeping index 3), then one layer per residual block.
//   18: 12 layers, 34: 20, 50: 20, 101: 37.
//   VGG-11/13/16/19, with (`_bn`) and without batch norm: every conv, BN, ReLU
//   and max-pool is one layer. 21/25/31/37 layers, 29/35/44/53 with BN.
//
// Extension point (the reference's BaseModel): register a BackboneFactory
// under a name; the factory declares the layers (module, class name, output
// feature width) and the classifier-head configuration, and the runtime gives
// it exits, splitting, bundles, profiling and serving for free.
//
// Thread-safety: the registry is internally synchronised. A Backbone is a
// plain value that is consumed by EarlyExitNet (see eenn_model.h).
#ifndef EENN_COMMON_ZOO_H_
#define EENN_COMMON_ZOO_H_

#include <torch/nn/module.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_spec.h"

namespace torch::nn {
class Conv2dImpl;
class BatchNorm2dImpl;
}  // namespace torch::nn

namespace eenn::common {

// A layer's forward over oneDNN (mkldnn) tensors: oneDNN tensor in, oneDNN
// tensor out. Built at inference time from the layer's current weights.
using OneDnnForward = std::function<torch::Tensor(const torch::Tensor&)>;

// How the inference runtime (common/fast_forward.h) lowers a layer onto
// oneDNN. A layer that is a single convolution, batch norm or ReLU says so,
// so that a convolution layer followed by batch-norm and ReLU layers (VGG,
// the ResNet stem) runs as one fused convolution; any other layer compiles
// its own oneDNN forward. Layers whose module is a plain nn::Conv2d,
// BatchNorm2d, ReLU, Identity or MaxPool2d need no lowering: the runtime
// recognises them. A layer with neither runs its dense forward.
struct LayerLowering {
  std::shared_ptr<torch::nn::Conv2dImpl> conv;   // a convolution layer
  std::shared_ptr<torch::nn::BatchNorm2dImpl> bn;  // a batch-norm layer
  bool relu = false;                             // a ReLU layer
  bool identity = false;                         // an identity layer
  std::function<OneDnnForward()> compile;        // anything else
};

// One backbone layer: a module, how to call it, and its static facts.
struct BackboneLayer {
  std::shared_ptr<torch::nn::Module> module;  // registered as backbone.<index>
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  std::string class_name;    // profile key class name, e.g. "ResNetConv1"
  int64_t feature_dim = 0;   // output channels
  std::function<LayerLowering()> lower;  // optional: see LayerLowering
};

// Wraps a torch module holder (Conv2d, BatchNorm2d, ...) or any module type
// with `Tensor forward(Tensor)` as a backbone layer.
template <typename Holder>
BackboneLayer MakeLayer(Holder holder, std::string class_name, int64_t feature_dim) {
  auto ptr = holder.ptr();
  BackboneLayer layer;
  layer.module = ptr;
  layer.forward = [ptr](const torch::Tensor& x) { return ptr->forward(x); };
  layer.class_name = std::move(class_name);
  layer.feature_dim = feature_dim;
  return layer;
}

// Options a factory receives.
struct BackboneOptions {
  Variant variant = Variant::kCifar;
  int64_t num_classes = 10;
  double width = 1.0;  // channel multiplier
};

// What a factory returns.
struct Backbone {
  std::vector<BackboneLayer> layers;
  HeadConfig head;                      // default head for exits and classifier
  std::vector<int64_t> input_shape;     // (C, H, W) of one sample
};

// The reference's weight initialisation, applied recursively to `module`:
// convolutions kaiming-normal (fan_out, ReLU), batch norm weight 1 / bias 0,
// Linear weight N(0, 0.01) / bias 0. Factories call it on their layers; the
// runtime calls it on the final classifier (exit heads keep LibTorch's
// default initialisation, as in the reference).
void ReferenceInit(torch::nn::Module& module);

using BackboneFactory = std::function<absl::StatusOr<Backbone>(const BackboneOptions&)>;

// Registers a user-defined backbone under `name`. Returns AlreadyExists when
// the name is taken, InvalidArgument for an empty name or factory.
absl::Status RegisterBackbone(const std::string& name, BackboneFactory factory);

// Builds the backbone registered as `name`. NotFound for an unknown name;
// InvalidArgument for bad options (non-positive classes or width) or a factory
// that returns no layers or non-positive feature widths.
absl::StatusOr<Backbone> BuildBackbone(const std::string& name, const BackboneOptions& options);

// Names of every registered backbone, sorted.
std::vector<std::string> RegisteredBackbones();

// Channel count after applying a width multiplier (rounded, at least 1).
int64_t ScaledWidth(int64_t channels, double width);

}  // namespace eenn::common

#endif  // EENN_COMMON_ZOO_H_
