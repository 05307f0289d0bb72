// The EENN runtime: a backbone from the zoo plus classifier heads ("exits")
// at chosen layer indices, and every inference mode that eenn's tools and
// daemons use.
//
// Request flow: the device runs Run(x, 0, split) -- layers [0, split) and the
// exits among them -- and ships PartialResult::pending_input (the input of
// layer `split`) to the server, which calls Run(x, split, num_layers()).
// Classify() is Run over the whole backbone.
//
// Exit semantics (the reference's multi-gate inference, with its quirks fixed):
//   * exit g is active iff thresholds[g] >= 0; inactive exits are not evaluated;
//   * a sample leaves at the first active exit whose confidence is strictly
//     greater than that exit's threshold;
//   * the final exit (the backbone's own classifier at its last layer) always
//     answers, whatever its threshold (conventionally 0);
//   * confidence is the maximum softmax probability ("max") or
//     1 - H(p)/ln(C) ("entropy", with 0 * ln 0 = 0).
// Batches may mix samples that leave at different exits; each sample's answer
// equals its batch-of-one answer.
//
// Thread-safety: after Create() the model is immutable in eval mode and its
// const inference methods may be called from many threads at once. Training
// (train(), parameter updates) must not overlap with inference.
#ifndef EENN_COMMON_EENN_MODEL_H_
#define EENN_COMMON_EENN_MODEL_H_

#include <torch/nn/module.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_spec.h"
#include "common/zoo.h"

namespace eenn::common {

enum class ConfidenceFunction { kMax, kEntropy };

absl::string_view ConfidenceName(ConfidenceFunction f);
absl::StatusOr<ConfidenceFunction> ParseConfidence(absl::string_view name);

// Confidence of each row of `probs` ([B, C] probabilities, C >= 2): a [B]
// float tensor.
torch::Tensor Confidence(const torch::Tensor& probs, ConfidenceFunction f);

// How exits decide: one threshold per exit (final included), and the
// confidence function.
struct ExitPolicy {
  std::vector<float> thresholds;
  ConfidenceFunction confidence = ConfidenceFunction::kMax;
};

// `policy` with every active exit (threshold >= 0) still evaluated but never
// firing (confidences never exceed 1): every layer runs, the cost of the
// heads in use included.
ExitPolicy NeverFiring(ExitPolicy policy);

// ExitResult (the answer for one sample) lives in common/model_spec.h.

// Outcome of running a layer range over a batch.
struct PartialResult {
  // One entry per input sample: decided[i] is true when sample i left at an
  // exit inside the range; its answer is results[i].
  std::vector<bool> decided;
  std::vector<ExitResult> results;  // results[i].confidences also for pending samples
  // Batch indices (into the input) of the samples still pending, ascending.
  std::vector<int64_t> pending;
  // Input of layer `end` for the pending samples, in `pending` order
  // (undefined when nothing is pending).
  torch::Tensor pending_input;
};

class ExitHeadImpl;
class LoweredBackbone;

class EarlyExitNet : public torch::nn::Module {
 public:
  // Builds `spec.architecture` from the zoo with exits at spec.exit_layers
  // (the last layer is added when missing), initialised as the reference does,
  // in eval mode, and probes one forward pass to record each layer's output
  // shape. InvalidArgument for unsorted, duplicate or out-of-range exits or
  // bad options; NotFound for an unknown architecture.
  static absl::StatusOr<std::shared_ptr<EarlyExitNet>> Create(const ModelSpec& spec);

  const ModelSpec& spec() const { return spec_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  int num_exits() const { return static_cast<int>(exit_layers_.size()); }
  int64_t num_classes() const { return spec_.num_classes; }
  const std::vector<int>& exit_layers() const { return exit_layers_; }
  const std::vector<LayerInfo>& layer_info() const { return info_; }
  const HeadConfig& head_config() const { return head_; }
  // (C, H, W) of one input sample.
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  // Per-sample shape of the input of layer k (k == num_layers() gives the
  // last layer's output). Requires 0 <= k <= num_layers().
  const std::vector<int64_t>& LayerInputShape(int k) const;
  // Exit index whose head sits on `layer`, or -1.
  int ExitIndexAtLayer(int layer) const;

  // Training/eval forward: logits of every exit, [B, C, num_exits()], in
  // backbone order. Runs with autograd unless the caller disables it.
  torch::Tensor ForwardAllExits(const torch::Tensor& x);

  // Logits [B, C] of exits 0..last_exit, running layers only up to that exit's layer.
  std::vector<torch::Tensor> ForwardExits(const torch::Tensor& x, int last_exit);

  // The module of backbone layer i and of exit head g (for freezing, profiling).
  std::shared_ptr<torch::nn::Module> LayerModule(int i) const { return layers_.at(i).module; }
  std::shared_ptr<torch::nn::Module> HeadModule(int g) const;

  // Logits [B, C] of exit `exit_index` alone (layers up to its layer plus its head).
  torch::Tensor ForwardExit(const torch::Tensor& x, int exit_index);

  // Layers [begin, end) without any exit: the input of layer `end`.
  torch::Tensor ForwardLayers(const torch::Tensor& x, int begin, int end);

  // Logits [B, C] of exit `exit_index` applied to `features`, the output of
  // its layer.
  torch::Tensor ForwardHead(const torch::Tensor& features, int exit_index);

  // Inference over layers [begin, end) with the exits among them, under
  // InferenceMode. `x` is the input of layer `begin` ([B, ...] matching
  // LayerInputShape(begin)). When end == num_layers() every sample is decided.
  // InvalidArgument for a bad range, a wrong input shape or a policy whose
  // threshold count differs from num_exits(); Internal for a LibTorch failure.
  absl::StatusOr<PartialResult> Run(const torch::Tensor& x, int begin, int end,
                                    const ExitPolicy& policy) const;

  // Run over the whole backbone: one ExitResult per sample.
  absl::StatusOr<std::vector<ExitResult>> Classify(const torch::Tensor& x,
                                                   const ExitPolicy& policy) const;

  // Inference path of Run(): with `enable`, lowers the backbone onto oneDNN
  // (common/fast_forward.h: batch norm folded, weights prepacked) from the
  // current weights, and Run() uses it from then on; without, Run() goes back
  // to the dense modules. Weight changes after lowering are not seen until it
  // is called again. Not to be called while Run() is running. An error (no
  // oneDNN in this LibTorch, non-float parameters) leaves the dense path on.
  absl::Status SetOneDnn(bool enable);
  bool onednn() const { return lowered_ != nullptr; }
  // The lowered backbone, null on the dense path (for the profiler and the
  // calibration cost model, which time its steps).
  const LoweredBackbone* lowered() const { return lowered_.get(); }

  // Validates a policy against this model's exits.
  absl::Status ValidatePolicy(const ExitPolicy& policy) const;

  // Parameters and buffers by their state-dict names (backbone.<i>..., gates.<layer>...).
  std::vector<std::pair<std::string, torch::Tensor>> StateDict() const;

 private:
  EarlyExitNet() = default;
  absl::Status Build(const ModelSpec& spec);

  ModelSpec spec_;
  HeadConfig head_;
  std::vector<BackboneLayer> layers_;
  std::vector<int> exit_layers_;
  std::vector<int> exit_at_layer_;  // layer -> exit index or -1
  std::vector<std::shared_ptr<ExitHeadImpl>> heads_;
  std::vector<LayerInfo> info_;
  std::vector<int64_t> input_shape_;
  std::vector<std::vector<int64_t>> layer_input_shapes_;
  std::shared_ptr<const LoweredBackbone> lowered_;
};

}  // namespace eenn::common

#endif  // EENN_COMMON_EENN_MODEL_H_
