#include "common/fast_forward.h"

#include <ATen/Context.h>
#include <ATen/ops/mkldnn_convolution.h>
#include <ATen/ops/mkldnn_reorder_conv2d_weight.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/torch.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"

namespace eenn::common {

namespace nn = torch::nn;

bool OneDnnAvailable() { return at::hasMKLDNN(); }

bool OneDnnByDefault() {
  const char* env = std::getenv("EENN_ONEDNN");
  return OneDnnAvailable() && !(env != nullptr && std::string(env) == "0");
}

torch::Tensor ToOneDnn(const torch::Tensor& dense) { return dense.contiguous().to_mkldnn(); }
torch::Tensor ToDense(const torch::Tensor& onednn) { return onednn.to_dense(); }

namespace {

std::vector<int64_t> Vec2(const torch::ExpandingArray<2>& a) { return {(*a)[0], (*a)[1]}; }

// Whether FusedConv can lower `conv`: explicit zero padding, float32 on the CPU.
bool ConvSupported(const nn::Conv2dImpl& conv) {
  return c10::get_if<torch::ExpandingArray<2>>(&conv.options.padding()) != nullptr &&
         c10::get_if<torch::enumtype::kZeros>(&conv.options.padding_mode()) != nullptr &&
         conv.weight.defined() && conv.weight.scalar_type() == torch::kFloat &&
         conv.weight.device().is_cpu();
}

// Batch norm in eval mode with running statistics (foldable).
bool BnSupported(const nn::BatchNorm2dImpl& bn) {
  return bn.running_mean.defined() && bn.running_var.defined() &&
         bn.running_mean.scalar_type() == torch::kFloat && bn.running_mean.device().is_cpu();
}

// The eval-mode BN as y = x * scale + shift, in double for an exact fold.
void BnAffine(const nn::BatchNorm2dImpl& bn, torch::Tensor* scale, torch::Tensor* shift) {
  torch::Tensor var = bn.running_var.to(torch::kDouble);
  torch::Tensor mean = bn.running_mean.to(torch::kDouble);
  torch::Tensor gamma = bn.weight.defined() ? bn.weight.to(torch::kDouble) : torch::ones_like(var);
  torch::Tensor beta = bn.bias.defined() ? bn.bias.to(torch::kDouble) : torch::zeros_like(var);
  *scale = gamma / torch::sqrt(var + bn.options.eps());
  *shift = beta - mean * *scale;
}

// A dense layer forward wrapped for oneDNN tensors.
OneDnnForward DenseFallback(std::function<torch::Tensor(const torch::Tensor&)> forward) {
  return [forward = std::move(forward)](const torch::Tensor& x) {
    return ToOneDnn(forward(ToDense(x)));
  };
}

OneDnnForward BatchNormForward(const std::shared_ptr<nn::BatchNorm2dImpl>& bn) {
  torch::Tensor scale, shift;
  BnAffine(*bn, &scale, &shift);
  // oneDNN's inference batch norm with mean 0 and variance 1 - eps is the affine map.
  torch::Tensor w = scale.to(torch::kFloat), b = shift.to(torch::kFloat);
  torch::Tensor mean = torch::zeros_like(w), var = torch::ones_like(w);
  return [w, b, mean, var](const torch::Tensor& x) {
    return torch::batch_norm(x, w, b, mean, var, /*training=*/false, 0.0, /*eps=*/0.0,
                             /*cudnn_enabled=*/false);
  };
}

OneDnnForward MaxPoolForward(const nn::MaxPool2dImpl& pool) {
  const auto k = Vec2(pool.options.kernel_size()), s = Vec2(pool.options.stride()),
             p = Vec2(pool.options.padding()), d = Vec2(pool.options.dilation());
  const bool ceil = pool.options.ceil_mode();
  return [k, s, p, d, ceil](const torch::Tensor& x) { return torch::max_pool2d(x, k, s, p, d, ceil); };
}

// The lowering of one layer: from its `lower` hook, else from its module type.
LayerLowering Describe(const BackboneLayer& layer) {
  if (layer.lower) return layer.lower();
  LayerLowering l;
  if (auto conv = std::dynamic_pointer_cast<nn::Conv2dImpl>(layer.module)) {
    l.conv = conv;
  } else if (auto bn = std::dynamic_pointer_cast<nn::BatchNorm2dImpl>(layer.module)) {
    l.bn = bn;
  } else if (std::dynamic_pointer_cast<nn::ReLUImpl>(layer.module)) {
    l.relu = true;
  } else if (std::dynamic_pointer_cast<nn::IdentityImpl>(layer.module)) {
    l.identity = true;
  } else if (auto pool = std::dynamic_pointer_cast<nn::MaxPool2dImpl>(layer.module)) {
    l.compile = [pool] { return MaxPoolForward(*pool); };
  }
  return l;
}

}  // namespace

FusedConv::FusedConv(const nn::Conv2dImpl& conv, const nn::BatchNorm2dImpl* bn, bool relu)
    : relu_(relu) {
  if (!ConvSupported(conv) || (bn != nullptr && !BnSupported(*bn))) {
    throw std::invalid_argument("convolution not supported by the oneDNN path");
  }
  torch::NoGradGuard no_grad;
  const auto* pad = c10::get_if<torch::ExpandingArray<2>>(&conv.options.padding());
  stride_ = Vec2(conv.options.stride());
  padding_ = Vec2(*pad);
  dilation_ = Vec2(conv.options.dilation());
  groups_ = conv.options.groups();
  torch::Tensor w = conv.weight.detach().to(torch::kDouble);
  torch::Tensor b = conv.bias.defined() ? conv.bias.detach().to(torch::kDouble)
                                        : torch::zeros({w.size(0)}, torch::kDouble);
  if (bn != nullptr) {
    torch::Tensor scale, shift;
    BnAffine(*bn, &scale, &shift);
    w = w * scale.reshape({-1, 1, 1, 1});
    b = b * scale + shift;
  }
  weight_ = at::mkldnn_reorder_conv2d_weight(w.to(torch::kFloat).contiguous().to_mkldnn(),
                                             padding_, stride_, dilation_, groups_);
  bias_ = b.to(torch::kFloat).contiguous();
}

torch::Tensor FusedConv::operator()(const torch::Tensor& x) const {
  torch::Tensor y =
      at::mkldnn_convolution(x, weight_, bias_, padding_, stride_, dilation_, groups_);
  return relu_ ? torch::relu_(y) : y;
}

absl::StatusOr<std::unique_ptr<LoweredBackbone>> LoweredBackbone::Lower(
    const std::vector<BackboneLayer>& layers, const std::vector<int>& exit_at_layer) {
  if (!OneDnnAvailable()) {
    return absl::InvalidArgumentError("this LibTorch has no oneDNN (mkldnn) CPU kernels");
  }
  for (const auto& layer : layers) {
    for (const auto& p : layer.module->parameters()) {
      if (p.scalar_type() != torch::kFloat || !p.device().is_cpu()) {
        return absl::InvalidArgumentError("the oneDNN path needs float32 parameters on the CPU");
      }
    }
  }
  const int n = static_cast<int>(layers.size());
  std::unique_ptr<LoweredBackbone> out(new LoweredBackbone());
  out->single_.resize(n);
  out->fused_.resize(n);
  out->span_.assign(n, 1);
  std::vector<LayerLowering> desc;
  desc.reserve(n);
  for (const auto& layer : layers) desc.push_back(Describe(layer));
  try {
    torch::NoGradGuard no_grad;
    for (int k = 0; k < n; ++k) {
      const LayerLowering& d = desc[k];
      if (d.conv && ConvSupported(*d.conv)) {
        out->single_[k] = FusedConv(*d.conv, nullptr, false);
        // Fuse a following BN layer (and a ReLU after it, or a ReLU directly)
        // when no exit reads an inner output.
        int span = 1;
        const nn::BatchNorm2dImpl* bn = nullptr;
        bool relu = false;
        if (k + 1 < n && exit_at_layer[k] < 0 && desc[k + 1].bn && BnSupported(*desc[k + 1].bn)) {
          bn = desc[k + 1].bn.get();
          span = 2;
          if (k + 2 < n && exit_at_layer[k + 1] < 0 && desc[k + 2].relu) {
            relu = true;
            span = 3;
          }
        } else if (k + 1 < n && exit_at_layer[k] < 0 && desc[k + 1].relu) {
          relu = true;
          span = 2;
        }
        if (span > 1) {
          out->fused_[k] = FusedConv(*d.conv, bn, relu);
          out->span_[k] = span;
        }
      } else if (d.bn && BnSupported(*d.bn)) {
        out->single_[k] = BatchNormForward(d.bn);
      } else if (d.relu) {
        out->single_[k] = [](const torch::Tensor& x) { return torch::relu(x); };
      } else if (d.identity) {
        out->single_[k] = [](const torch::Tensor& x) { return x; };
      } else if (d.compile) {
        try {
          out->single_[k] = d.compile();
        } catch (const std::invalid_argument&) {  // e.g. a convolution FusedConv cannot take
          out->single_[k] = DenseFallback(layers[k].forward);
        }
      } else {
        out->single_[k] = DenseFallback(layers[k].forward);
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("lowering onto oneDNN failed: ", e.what()));
  }
  return out;
}

torch::Tensor LoweredBackbone::Step(int k, int end, const torch::Tensor& x, int* last) const {
  const int span = span_[k];
  if (span > 1 && k + span <= end) {
    *last = k + span - 1;
    return fused_[k](x);
  }
  *last = k;
  return single_[k](x);
}

}  // namespace eenn::common
