#include "common/eenn_model.h"

#include <torch/nn/functional/dropout.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fast_forward.h"
#include "common/head_kernels.h"
#include "common/status_macros.h"

namespace eenn::common {

namespace nn = torch::nn;

// A module that only groups children under a name ("backbone", "gates").
class ContainerImpl : public nn::Module {};

// The reference's ConvMlp "pre_logits" block of the VGG classifier.
class ConvMlpImpl : public nn::Module {
 public:
  ConvMlpImpl(int64_t in, int64_t hidden) {
    fc1 = register_module("fc1", nn::Conv2d(nn::Conv2dOptions(in, hidden, 7)));
    fc2 = register_module("fc2", nn::Conv2d(nn::Conv2dOptions(hidden, hidden, 1)));
  }
  nn::Conv2d fc1{nullptr}, fc2{nullptr};
};

// The pooled classifier (the reference's ClassifierHead): keys fc.0 (and fc.2).
class PoolLinearImpl : public nn::Module {
 public:
  PoolLinearImpl(int64_t in, int64_t hidden, int64_t classes) {
    nn::Sequential seq;
    if (hidden > 0) {
      seq->push_back(nn::Linear(in, hidden));
      seq->push_back(nn::ReLU());
      seq->push_back(nn::Linear(hidden, classes));
    } else {
      seq->push_back(nn::Linear(in, classes));
    }
    fc = register_module("fc", seq);
  }
  nn::Sequential fc{nullptr};
};

class ExitHeadImpl : public nn::Module {
 public:
  // `pool`: pooled heads average-pool to pool x pool (1 = global pooling).
  ExitHeadImpl(const HeadConfig& cfg, int64_t in, int64_t classes, int64_t pool = 1)
      : cfg_(cfg), pool_(pool) {
    if (cfg.kind == HeadKind::kConvMlp) {
      const int64_t hidden = cfg.hidden > 0 ? cfg.hidden : 4096;
      pre_logits_ = register_module("pre_logits", std::make_shared<ConvMlpImpl>(in, hidden));
      head_ = register_module("head", std::make_shared<PoolLinearImpl>(hidden, 0, classes));
    } else {
      fc_ = std::make_shared<PoolLinearImpl>(in * pool * pool, cfg.hidden, classes);
      // Keys fc.0 / fc.2 directly under the head, as in the reference.
      register_module("fc", fc_->fc.ptr());
      // The Linear layers in order, each with whether a ReLU follows it
      // (PoolLinearImpl holds only Linear and ReLU), for PooledInference.
      const auto layers = fc_->fc->children();
      for (size_t i = 0; i < layers.size(); ++i) {
        if (auto* lin = layers[i]->as<nn::Linear>()) {
          const bool relu = i + 1 < layers.size() && layers[i + 1]->as<nn::Linear>() == nullptr;
          linears_.push_back({lin, relu});
        }
      }
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const bool train = is_training();
    if (!train && cfg_.kind == HeadKind::kPoolLinear && !torch::GradMode::is_enabled() &&
        x.dim() == 4 && x.scalar_type() == torch::kFloat && x.device().is_cpu() &&
        x.is_contiguous() && x.size(2) % pool_ == 0 && x.size(3) % pool_ == 0) {
      return PooledInference(x);
    }
    torch::Tensor y = x;
    std::shared_ptr<PoolLinearImpl> tail = fc_;
    if (cfg_.kind == HeadKind::kConvMlp) {
      if (y.size(2) < 7 || y.size(3) < 7) {
        y = torch::adaptive_avg_pool2d(y, {std::max<int64_t>(7, y.size(2)),
                                           std::max<int64_t>(7, y.size(3))});
      }
      if (!train && !torch::GradMode::is_enabled() && y.size(2) == 7 && y.size(3) == 7) {
        // At inference on a 7 x 7 map both convolutions produce one pixel:
        // they are matrix-vector products over the flattened map (the BLAS
        // reads each weight once; a convolution call would first reorder
        // the 7 x 7 kernel's hundreds of megabytes for oneDNN, every call).
        y = torch::relu(ConvAsLinear(*pre_logits_->fc1, y.flatten(1)));
        y = torch::relu(ConvAsLinear(*pre_logits_->fc2, y)).unsqueeze(2).unsqueeze(3);
      } else {
        y = torch::relu(pre_logits_->fc1->forward(y));
        if (cfg_.dropout > 0) y = torch::dropout(y, cfg_.dropout, train);
        y = torch::relu(pre_logits_->fc2->forward(y));
      }
      tail = head_;
    }
    const int64_t pool = tail == fc_ ? pool_ : 1;
    if (y.size(2) != pool || y.size(3) != pool) {
      // Equal cells: a strided average pool, the same numbers as the adaptive
      // one and much faster to train through (channels-last backward).
      y = (y.size(2) % pool == 0 && y.size(3) % pool == 0)
              ? torch::avg_pool2d(y, {y.size(2) / pool, y.size(3) / pool})
              : torch::adaptive_avg_pool2d(y, {pool, pool});
    }
    y = y.flatten(1);
    if (cfg_.dropout > 0) y = torch::dropout(y, cfg_.dropout, train);
    // The classifier's Linear/ReLU chain; a single row goes through
    // matrix-vector products (addmm with one row costs ~6x more, e.g. 82 vs
    // 14 us for 512x512 on this BLAS).
    for (const auto& m : tail->fc->children()) {
      if (const auto* lin = m->as<nn::Linear>()) {
        if (y.size(0) != 1) {
          y = torch::linear(y, lin->weight, lin->bias);
        } else if (lin->bias.defined()) {
          y = torch::addmv(lin->bias, lin->weight, y[0]).unsqueeze(0);
        } else {
          y = torch::mv(lin->weight, y[0]).unsqueeze(0);
        }
      } else {
        y = torch::relu(y);  // PoolLinearImpl holds only Linear and ReLU
      }
    }
    return y;
  }

 private:
  // A convolution whose kernel covers its whole input, applied to the input
  // flattened to [B, C * kh * kw] (the weight's own order): [B, out].
  static torch::Tensor ConvAsLinear(const nn::Conv2dImpl& conv, const torch::Tensor& flat) {
    const torch::Tensor w = conv.weight.reshape({conv.weight.size(0), -1});
    if (flat.size(0) == 1) {
      torch::Tensor v = flat[0];
      return (conv.bias.defined() ? torch::addmv(conv.bias, w, v) : torch::mv(w, v)).unsqueeze(0);
    }
    return conv.bias.defined() ? torch::addmm(conv.bias, flat, w.t()) : torch::mm(flat, w.t());
  }

  // The pooled head at inference on a contiguous NCHW float map, in plain
  // loops (common/head_kernels.h): the same arithmetic as the modules (up to
  // float summation order), without a dozen operator dispatches per call.
  torch::Tensor PooledInference(const torch::Tensor& x) const {
    const int64_t batch = x.size(0);
    int64_t features = x.size(1) * pool_ * pool_;
    std::vector<float> cur(static_cast<size_t>(batch * features)), next;
    if (pool_ == 1) {
      RowMeans(x.data_ptr<float>(), batch * features, x.size(2) * x.size(3), cur.data());
    } else {
      BlockMeans(x.data_ptr<float>(), batch * x.size(1), x.size(2), x.size(3), pool_, cur.data());
    }
    torch::Tensor out;
    for (size_t i = 0; i < linears_.size(); ++i) {
      const nn::LinearImpl& lin = *linears_[i].linear;
      // Parameters are contiguous unless someone assigned a strided view.
      const torch::Tensor w = lin.weight.is_contiguous() ? lin.weight : lin.weight.contiguous();
      torch::Tensor b = lin.bias;
      if (b.defined() && !b.is_contiguous()) b = b.contiguous();
      const int64_t out_features = w.size(0);
      float* dst;
      if (i + 1 == linears_.size()) {
        out = torch::empty({batch, out_features}, torch::kFloat);
        dst = out.data_ptr<float>();
      } else {
        next.resize(static_cast<size_t>(batch * out_features));
        dst = next.data();
      }
      const float* w_p = w.data_ptr<float>();
      const float* b_p = b.defined() ? b.data_ptr<float>() : nullptr;
      const bool relu = linears_[i].relu;
      if (batch == 1 && out_features * features >= kParallelHeadWeights) {
        // A wide hidden layer (VGG's 512) reads megabytes of weights that the
        // backbone evicted from the caches since the last sample: both
        // cores' memory bandwidth, output rows split between the threads.
        at::parallel_for(0, out_features, 32, [&](int64_t k0, int64_t k1) {
          LinearRows(cur.data(), 1, features, w_p + k0 * features, b_p != nullptr ? b_p + k0 : nullptr,
                     k1 - k0, relu, dst + k0);
        });
      } else {
        LinearRows(cur.data(), batch, features, w_p, b_p, out_features, relu, dst);
      }
      cur.swap(next);
      features = out_features;
    }
    return out;
  }

  // Weights (elements) from which one sample's Linear layer is split between
  // the intra-op threads (256 KB: a 10-class layer on 4 x 4 cells stays on
  // one thread, where a parallel region would cost more than it saves).
  static constexpr int64_t kParallelHeadWeights = 64 * 1024;

  struct LinearStep {
    const nn::LinearImpl* linear;
    bool relu;  // a ReLU follows it
  };

  HeadConfig cfg_;
  int64_t pool_ = 1;
  std::shared_ptr<ConvMlpImpl> pre_logits_;
  std::shared_ptr<PoolLinearImpl> head_;
  std::shared_ptr<PoolLinearImpl> fc_;
  std::vector<LinearStep> linears_;  // fc_'s Linear layers (pooled heads)
};

ExitPolicy NeverFiring(ExitPolicy policy) {
  for (float& t : policy.thresholds) {
    if (t >= 0) t = 2.0f;
  }
  return policy;
}

absl::string_view ConfidenceName(ConfidenceFunction f) {
  return f == ConfidenceFunction::kMax ? "max" : "entropy";
}

absl::StatusOr<ConfidenceFunction> ParseConfidence(absl::string_view name) {
  if (name == "max") return ConfidenceFunction::kMax;
  if (name == "entropy") return ConfidenceFunction::kEntropy;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown confidence function '", name, "' (expected max or entropy)"));
}

torch::Tensor Confidence(const torch::Tensor& probs, ConfidenceFunction f) {
  if (f == ConfidenceFunction::kMax) return std::get<0>(probs.max(1));
  const double log_c = std::log(static_cast<double>(probs.size(1)));
  // xlogy(0, 0) == 0, so zero probabilities contribute nothing (no NaN).
  return 1.0 + torch::xlogy(probs, probs).sum(1) / log_c;
}

namespace {

// Confidence (as Confidence() defines it) and argmax of every row of
// contiguous float logits [B, C], in plain loops: at batch 1 this replaces
// five small LibTorch ops per exit.
void RowConfidence(const torch::Tensor& logits, ConfidenceFunction f, std::vector<float>* conf,
                   std::vector<int64_t>* cls) {
  const int64_t rows = logits.size(0), c = logits.size(1);
  const float* l = logits.data_ptr<float>();
  conf->resize(rows);
  cls->resize(rows);
  std::vector<double> e(c);
  for (int64_t r = 0; r < rows; ++r, l += c) {
    int64_t best = 0;
    for (int64_t j = 1; j < c; ++j) {
      if (l[j] > l[best]) best = j;
    }
    double sum = 0;
    for (int64_t j = 0; j < c; ++j) sum += e[j] = std::exp(static_cast<double>(l[j]) - l[best]);
    (*cls)[r] = best;
    if (f == ConfidenceFunction::kMax) {
      (*conf)[r] = static_cast<float>(1.0 / sum);
    } else {
      double plogp = 0;
      for (int64_t j = 0; j < c; ++j) {
        const double p = e[j] / sum;
        if (p > 0) plogp += p * std::log(p);
      }
      (*conf)[r] = static_cast<float>(1.0 + plogp / std::log(static_cast<double>(c)));
    }
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<EarlyExitNet>> EarlyExitNet::Create(const ModelSpec& spec) {
  std::shared_ptr<EarlyExitNet> net(new EarlyExitNet());
  try {
    EENN_RETURN_IF_ERROR(net->Build(spec));
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("building model '", spec.architecture, "': ", e.what_without_backtrace()));
  }
  return net;
}

absl::Status EarlyExitNet::Build(const ModelSpec& spec) {
  spec_ = spec;
  BackboneOptions opts{spec.variant, spec.num_classes, spec.width};
  EENN_ASSIGN_OR_RETURN(Backbone backbone, BuildBackbone(spec.architecture, opts));
  layers_ = std::move(backbone.layers);
  input_shape_ = backbone.input_shape;
  head_ = spec.head_override ? spec.head : backbone.head;
  if (head_.hidden < 0 || !(head_.dropout >= 0.0 && head_.dropout < 1.0)) {
    return absl::InvalidArgumentError("head hidden width must be >= 0 and dropout in [0, 1)");
  }
  if (spec.exit_pool < 1 || spec.exit_pool > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("exit_pool must be in [1, 64], got ", spec.exit_pool));
  }
  if (spec.exit_pool > 1 && head_.kind != HeadKind::kPoolLinear) {
    return absl::InvalidArgumentError("exit_pool applies to pooled (pool_linear) heads only");
  }
  const int n = num_layers();

  exit_layers_ = spec.exit_layers;
  for (size_t i = 0; i < exit_layers_.size(); ++i) {
    const int l = exit_layers_[i];
    if (l < 0 || l >= n) {
      return absl::InvalidArgumentError(absl::StrCat("exit layer ", l, " is out of range for '",
                                                     spec.architecture, "' (layers 0..", n - 1,
                                                     ")"));
    }
    if (i > 0 && l <= exit_layers_[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "exit layers must be strictly ascending, got [", absl::StrJoin(exit_layers_, ", "), "]"));
    }
  }
  if (exit_layers_.empty() || exit_layers_.back() != n - 1) exit_layers_.push_back(n - 1);
  spec_.exit_layers = exit_layers_;
  exit_at_layer_.assign(n, -1);
  for (int g = 0; g < num_exits(); ++g) exit_at_layer_[exit_layers_[g]] = g;

  auto backbone_holder = register_module("backbone", std::make_shared<ContainerImpl>());
  info_.clear();
  for (int i = 0; i < n; ++i) {
    backbone_holder->register_module(std::to_string(i), layers_[i].module);
    info_.push_back(LayerInfo{i, layers_[i].class_name, layers_[i].feature_dim, {}});
  }
  auto gates_holder = register_module("gates", std::make_shared<ContainerImpl>());
  for (int g = 0; g < num_exits(); ++g) {
    const int l = exit_layers_[g];
    const bool final_exit = g == num_exits() - 1;
    auto head = std::make_shared<ExitHeadImpl>(head_, layers_[l].feature_dim, spec.num_classes,
                                               final_exit ? 1 : spec.exit_pool);
    if (final_exit) ReferenceInit(*head);  // the backbone's own classifier
    gates_holder->register_module(std::to_string(l), head);
    heads_.push_back(head);
  }
  eval();

  // Probe: record per-layer shapes and check that every head accepts its input.
  torch::InferenceMode guard;
  std::vector<int64_t> batch_shape = {1};
  batch_shape.insert(batch_shape.end(), input_shape_.begin(), input_shape_.end());
  torch::Tensor x = torch::zeros(batch_shape);
  layer_input_shapes_.assign(1, input_shape_);
  for (int i = 0; i < n; ++i) {
    x = layers_[i].forward(x);
    std::vector<int64_t> shape(x.sizes().begin() + 1, x.sizes().end());
    if (x.dim() != 4 || x.size(1) != layers_[i].feature_dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "architecture '", spec.architecture, "' layer ", i, " (", layers_[i].class_name,
          ") outputs shape [", absl::StrJoin(x.sizes(), ", "), "] but declares feature_dim ",
          layers_[i].feature_dim));
    }
    info_[i].output_shape = shape;
    layer_input_shapes_.push_back(shape);
    if (exit_at_layer_[i] >= 0) {
      torch::Tensor logits = heads_[exit_at_layer_[i]]->forward(x);
      if (logits.dim() != 2 || logits.size(1) != spec.num_classes) {
        return absl::InternalError(absl::StrCat("exit at layer ", i, " produced shape [",
                                                absl::StrJoin(logits.sizes(), ", "), "]"));
      }
    }
  }
  return absl::OkStatus();
}

const std::vector<int64_t>& EarlyExitNet::LayerInputShape(int k) const {
  return layer_input_shapes_.at(k);
}

int EarlyExitNet::ExitIndexAtLayer(int layer) const {
  if (layer < 0 || layer >= num_layers()) return -1;
  return exit_at_layer_[layer];
}

torch::Tensor EarlyExitNet::ForwardAllExits(const torch::Tensor& x) {
  return torch::stack(ForwardExits(x, num_exits() - 1), 2);
}

std::vector<torch::Tensor> EarlyExitNet::ForwardExits(const torch::Tensor& x, int last_exit) {
  std::vector<torch::Tensor> outs;
  outs.reserve(last_exit + 1);
  torch::Tensor y = x;
  const int end = exit_layers_.at(last_exit) + 1;
  for (int i = 0; i < end; ++i) {
    y = layers_[i].forward(y);
    if (exit_at_layer_[i] >= 0) outs.push_back(heads_[exit_at_layer_[i]]->forward(y));
  }
  return outs;
}

std::shared_ptr<torch::nn::Module> EarlyExitNet::HeadModule(int g) const { return heads_.at(g); }

torch::Tensor EarlyExitNet::ForwardExit(const torch::Tensor& x, int exit_index) {
  const int l = exit_layers_.at(exit_index);
  return heads_[exit_index]->forward(ForwardLayers(x, 0, l + 1));
}

torch::Tensor EarlyExitNet::ForwardLayers(const torch::Tensor& x, int begin, int end) {
  torch::Tensor y = x;
  for (int i = begin; i < end; ++i) y = layers_[i].forward(y);
  return y;
}

torch::Tensor EarlyExitNet::ForwardHead(const torch::Tensor& features, int exit_index) {
  return heads_.at(exit_index)->forward(features);
}

absl::Status EarlyExitNet::SetOneDnn(bool enable) {
  lowered_.reset();
  if (!enable) return absl::OkStatus();
  EENN_ASSIGN_OR_RETURN(std::unique_ptr<LoweredBackbone> lowered,
                        LoweredBackbone::Lower(layers_, exit_at_layer_));
  lowered_ = std::move(lowered);
  return absl::OkStatus();
}

absl::Status EarlyExitNet::ValidatePolicy(const ExitPolicy& policy) const {
  if (static_cast<int>(policy.thresholds.size()) != num_exits()) {
    return absl::InvalidArgumentError(absl::StrCat("expected ", num_exits(),
                                                   " thresholds (one per exit, final included), got ",
                                                   policy.thresholds.size()));
  }
  for (float t : policy.thresholds) {
    if (std::isnan(t)) return absl::InvalidArgumentError("thresholds must not be NaN");
  }
  return absl::OkStatus();
}

absl::StatusOr<PartialResult> EarlyExitNet::Run(const torch::Tensor& x, int begin, int end,
                                                const ExitPolicy& policy) const {
  const int n = num_layers();
  if (begin < 0 || begin > n || end < begin || end > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer range [", begin, ", ", end, ") is invalid for ", n, " layers"));
  }
  EENN_RETURN_IF_ERROR(ValidatePolicy(policy));
  const std::vector<int64_t>& want = layer_input_shapes_[begin];
  if (!x.defined() || x.dim() != static_cast<int64_t>(want.size()) + 1 ||
      !std::equal(want.begin(), want.end(), x.sizes().begin() + 1) || x.size(0) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input of layer ", begin, " must have shape [B, ", absl::StrJoin(want, ", "), "], got [",
        x.defined() ? absl::StrJoin(x.sizes(), ", ") : "undefined", "]"));
  }
  if (x.scalar_type() != torch::kFloat) {
    return absl::InvalidArgumentError("input tensor must be float32");
  }

  const int64_t batch = x.size(0);
  PartialResult out;
  out.decided.assign(batch, false);
  out.results.resize(batch);
  std::vector<int64_t> alive(batch);
  for (int64_t i = 0; i < batch; ++i) alive[i] = i;

  try {
    torch::InferenceMode guard;
    const LoweredBackbone* lowered = lowered_.get();
    // On the oneDNN path `y` is a oneDNN tensor between layers; `dense` is
    // its dense copy where one is needed (exit heads, the pending input).
    torch::Tensor y = (lowered != nullptr && begin < end) ? ToOneDnn(x) : x;
    for (int k = begin; k < end && !alive.empty(); ++k) {
      if (lowered != nullptr) {
        y = lowered->Step(k, end, y, &k);  // k becomes the group's last layer
      } else {
        y = layers_[k].forward(y);
      }
      const int g = exit_at_layer_[k];
      if (g < 0) continue;
      const bool final_exit = g == num_exits() - 1;
      const float threshold = policy.thresholds[g];
      if (!final_exit && threshold < 0) continue;  // inactive exit: not evaluated
      // The head reads a dense feature map (on oneDNN, converting and then
      // pooling densely is faster than oneDNN's own pooling at batch 1).
      torch::Tensor features = lowered != nullptr ? ToDense(y) : y;
      torch::Tensor logits = heads_[g]->forward(features);
      if (logits.scalar_type() != torch::kFloat) logits = logits.to(torch::kFloat);
      logits = logits.contiguous();  // no dispatch when it already is
      std::vector<float> conf_v;
      std::vector<int64_t> cls_v;
      RowConfidence(logits, policy.confidence, &conf_v, &cls_v);
      const float* conf_p = conf_v.data();
      const int64_t* cls_p = cls_v.data();
      std::vector<int64_t> keep;
      keep.reserve(alive.size());
      for (size_t j = 0; j < alive.size(); ++j) {
        ExitResult& r = out.results[alive[j]];
        r.confidences.push_back(conf_p[j]);
        if (final_exit || conf_p[j] > threshold) {
          r.exit_index = g;
          r.exit_layer = k;
          r.class_id = cls_p[j];
          r.confidence = conf_p[j];
          out.decided[alive[j]] = true;
        } else {
          keep.push_back(static_cast<int64_t>(j));
        }
      }
      if (keep.size() != alive.size()) {
        std::vector<int64_t> next;
        next.reserve(keep.size());
        for (int64_t j : keep) next.push_back(alive[j]);
        alive.swap(next);
        if (!alive.empty()) {
          y = features.index_select(0, torch::tensor(keep, torch::kLong));
          if (lowered != nullptr) y = ToOneDnn(y);
        }
      }
    }
    out.pending = alive;
    if (!alive.empty()) {
      out.pending_input = (lowered != nullptr && begin < end) ? ToDense(y) : y;
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("model '", spec_.architecture, "' failed in layers [",
                                            begin, ", ", end, "): ", e.what_without_backtrace()));
  }
  return out;
}

absl::StatusOr<std::vector<ExitResult>> EarlyExitNet::Classify(const torch::Tensor& x,
                                                               const ExitPolicy& policy) const {
  EENN_ASSIGN_OR_RETURN(PartialResult r, Run(x, 0, num_layers(), policy));
  return std::move(r.results);
}

std::vector<std::pair<std::string, torch::Tensor>> EarlyExitNet::StateDict() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

}  // namespace eenn::common
