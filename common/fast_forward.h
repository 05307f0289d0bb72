// The inference runtime's oneDNN path: a backbone lowered, at load time, onto
// oneDNN (LibTorch's mkldnn backend) the way PyTorch's frozen-and-optimised
// TorchScript path does it (torch.jit.freeze + optimize_for_inference):
//
//   - batch norm is folded into the convolution before it, inside residual
//     blocks and across layers (a VGG conv layer followed by its BN and ReLU
//     layers runs as one convolution with a bias and an in-place ReLU);
//   - every convolution weight is reordered once into oneDNN's blocked layout
//     (prepacked), so no call pays a weight reorder;
//   - activations stay in oneDNN's layout between layers; they are converted
//     to dense tensors only where a dense tensor is needed: at an exit head, at
//     the end of the range (the split tensor that goes on the wire), and around
//     a layer that has no lowering.
//
// Layer indices keep their meaning: the lowered network computes every layer
// output the dense one does (to float rounding), and fusion never crosses a
// range boundary or an exit, so a split or an exit at any layer sees the same
// tensor either way.
//
// Thread-safety: a LoweredBackbone is immutable after Lower(); Run may be
// called concurrently. It snapshots the weights: parameter changes after
// Lower() are not seen (lower again).
#ifndef EENN_COMMON_FAST_FORWARD_H_
#define EENN_COMMON_FAST_FORWARD_H_

#include <torch/types.h>

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/zoo.h"

namespace eenn::common {

// True when this LibTorch was built with oneDNN (mkldnn) CPU kernels.
bool OneDnnAvailable();

// Whether LoadBundle lowers models onto oneDNN: when available, unless the
// environment sets EENN_ONEDNN=0 (the dense path, for comparisons).
bool OneDnnByDefault();

// A 2-D convolution with an optional batch norm folded in (eval statistics)
// and an optional ReLU applied in place, its weight prepacked for oneDNN.
// Input and output are oneDNN tensors.
class FusedConv {
 public:
  FusedConv(const torch::nn::Conv2dImpl& conv, const torch::nn::BatchNorm2dImpl* bn, bool relu);
  torch::Tensor operator()(const torch::Tensor& x) const;

 private:
  torch::Tensor weight_;  // oneDNN blocked layout
  torch::Tensor bias_;    // dense, always defined
  std::vector<int64_t> stride_, padding_, dilation_;
  int64_t groups_ = 1;
  bool relu_ = false;
};

// A backbone lowered onto oneDNN.
class LoweredBackbone {
 public:
  // Lowers `layers` with their current weights. A conv layer followed by BN
  // (and ReLU) layers is fused unless an exit reads one of the inner outputs
  // (`exit_at_layer[k] >= 0`). InvalidArgument when oneDNN is unavailable or
  // a parameter is not float32 on the CPU.
  static absl::StatusOr<std::unique_ptr<LoweredBackbone>> Lower(
      const std::vector<BackboneLayer>& layers, const std::vector<int>& exit_at_layer);

  int num_layers() const { return static_cast<int>(single_.size()); }

  // Runs layer `k` on a oneDNN tensor, fused with the layers after it when
  // the whole group lies before `end`. Returns the output of layer
  // `*last`, which the call sets (k <= *last < end).
  torch::Tensor Step(int k, int end, const torch::Tensor& x, int* last) const;

  // Layers fused into the group that starts at `k` (1 when none).
  int GroupSpan(int k) const { return span_[k]; }

 private:
  LoweredBackbone() = default;
  std::vector<OneDnnForward> single_;  // layer k alone
  std::vector<OneDnnForward> fused_;   // group starting at k (when span_[k] > 1)
  std::vector<int> span_;
};

// Dense <-> oneDNN conversions used at range boundaries and exits.
torch::Tensor ToOneDnn(const torch::Tensor& dense);
torch::Tensor ToDense(const torch::Tensor& onednn);

}  // namespace eenn::common

#endif  // EENN_COMMON_FAST_FORWARD_H_
