#include "common/zoo.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/fast_forward.h"

namespace eenn::common {
namespace {

namespace nn = torch::nn;

nn::Conv2d Conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                bool bias) {
  return nn::Conv2d(
      nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(bias));
}

// Layer 0 of a ResNet: the stem convolution (reference class ResNetConv1).
class ResNetConv1Impl : public nn::Module {
 public:
  ResNetConv1Impl(int64_t out, Variant variant) {
    conv1 = register_module("conv1", variant == Variant::kCifar ? Conv(3, out, 3, 1, 1, false)
                                                                 : Conv(3, out, 7, 2, 3, false));
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv1->forward(x); }
  nn::Conv2d conv1{nullptr};
};
TORCH_MODULE(ResNetConv1);

// Layer 3 of a ResNet: the stem max-pool, an identity in the CIFAR variant
// (reference class ResNetMaxPool1).
class ResNetMaxPool1Impl : public nn::Module {
 public:
  explicit ResNetMaxPool1Impl(Variant variant) : pool_(variant == Variant::kImagenet) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return pool_ ? torch::max_pool2d(x, {3, 3}, {2, 2}, {1, 1}) : x;
  }

 private:
  bool pool_;
};
TORCH_MODULE(ResNetMaxPool1);

// Optional batch norm: identity when `enabled` is false (the reference's
// no-BN ResNet replaces every norm by Identity).
nn::BatchNorm2d MaybeBn(nn::Module& owner, const std::string& name, int64_t channels,
                        bool enabled) {
  if (!enabled) return nn::BatchNorm2d(nullptr);
  return owner.register_module(name, nn::BatchNorm2d(channels));
}

torch::Tensor ApplyBn(nn::BatchNorm2d& bn, const torch::Tensor& x) {
  return bn.is_empty() ? x : bn->forward(x);
}

// Projection shortcut: 1x1 conv with stride, then BN (keys downsample.0/1).
nn::Sequential MakeDownsample(int64_t in, int64_t out, int64_t stride, bool bn) {
  nn::Sequential seq;
  seq->push_back(Conv(in, out, 1, stride, 0, false));
  if (bn) {
    seq->push_back(nn::BatchNorm2d(out));
  } else {
    seq->push_back(nn::Identity());
  }
  return seq;
}

// Bottleneck block (expansion 4), torchvision v1.5 style: stride on the 3x3.
class BottleneckImpl : public nn::Module {
 public:
  BottleneckImpl(int64_t in, int64_t planes, int64_t out, int64_t stride, bool bn) {
    conv1 = register_module("conv1", Conv(in, planes, 1, 1, 0, false));
    bn1 = MaybeBn(*this, "bn1", planes, bn);
    conv2 = register_module("conv2", Conv(planes, planes, 3, stride, 1, false));
    bn2 = MaybeBn(*this, "bn2", planes, bn);
    conv3 = register_module("conv3", Conv(planes, out, 1, 1, 0, false));
    bn3 = MaybeBn(*this, "bn3", out, bn);
    if (stride != 1 || in != out) {
      downsample = register_module("downsample", MakeDownsample(in, out, stride, bn));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::relu(ApplyBn(bn1, conv1->forward(x)));
    y = torch::relu(ApplyBn(bn2, conv2->forward(y)));
    y = ApplyBn(bn3, conv3->forward(y));
    y += downsample.is_empty() ? x : downsample->forward(x);
    return torch::relu_(y);
  }
  void ZeroInitLast() {
    if (!bn3.is_empty()) torch::nn::init::zeros_(bn3->weight);
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

// Basic block (expansion 1) for ResNet-18/34.
class BasicBlockImpl : public nn::Module {
 public:
  BasicBlockImpl(int64_t in, int64_t planes, int64_t stride, bool bn) {
    conv1 = register_module("conv1", Conv(in, planes, 3, stride, 1, false));
    bn1 = MaybeBn(*this, "bn1", planes, bn);
    conv2 = register_module("conv2", Conv(planes, planes, 3, 1, 1, false));
    bn2 = MaybeBn(*this, "bn2", planes, bn);
    if (stride != 1 || in != planes) {
      downsample = register_module("downsample", MakeDownsample(in, planes, stride, bn));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::relu(ApplyBn(bn1, conv1->forward(x)));
    y = ApplyBn(bn2, conv2->forward(y));
    y += downsample.is_empty() ? x : downsample->forward(x);
    return torch::relu_(y);
  }
  void ZeroInitLast() {
    if (!bn2.is_empty()) torch::nn::init::zeros_(bn2->weight);
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  nn::Sequential downsample{nullptr};
};
TORCH_MODULE(BasicBlock);

const nn::BatchNorm2dImpl* BnOrNull(const nn::BatchNorm2d& bn) {
  return bn.is_empty() ? nullptr : bn.get();
}

// The projection shortcut as one fused convolution (absent: identity).
std::optional<FusedConv> LowerDownsample(const nn::Sequential& downsample) {
  if (downsample.is_empty()) return std::nullopt;
  const auto* conv = downsample->ptr(0)->as<nn::Conv2d>();
  const auto* bn = downsample->ptr(1)->as<nn::BatchNorm2d>();  // null for Identity
  return FusedConv(*conv, bn, false);
}

// oneDNN forward of a residual block: folded, prepacked convolutions with the
// ReLUs in place; the shortcut added in place.
OneDnnForward ResidualForward(std::vector<FusedConv> convs, std::optional<FusedConv> shortcut) {
  return [convs = std::move(convs), shortcut = std::move(shortcut)](const torch::Tensor& x) {
    torch::Tensor y = x;
    for (const FusedConv& c : convs) y = c(y);
    y.add_(shortcut ? (*shortcut)(x) : x);
    return torch::relu_(y);
  };
}

LayerLowering LowerBottleneck(std::shared_ptr<BottleneckImpl> b) {
  LayerLowering l;
  l.compile = [b] {
    return ResidualForward({FusedConv(*b->conv1, BnOrNull(b->bn1), true),
                            FusedConv(*b->conv2, BnOrNull(b->bn2), true),
                            FusedConv(*b->conv3, BnOrNull(b->bn3), false)},
                           LowerDownsample(b->downsample));
  };
  return l;
}

LayerLowering LowerBasicBlock(std::shared_ptr<BasicBlockImpl> b) {
  LayerLowering l;
  l.compile = [b] {
    return ResidualForward({FusedConv(*b->conv1, BnOrNull(b->bn1), true),
                            FusedConv(*b->conv2, BnOrNull(b->bn2), false)},
                           LowerDownsample(b->downsample));
  };
  return l;
}

struct ResNetConfig {
  bool bottleneck;
  std::vector<int> blocks;  // blocks per stage
};

absl::StatusOr<Backbone> BuildResNet(const ResNetConfig& cfg, bool bn,
                                     const BackboneOptions& opt) {
  Backbone b;
  const int64_t stem = ScaledWidth(64, opt.width);
  ResNetConv1 conv1(stem, opt.variant);
  b.layers.push_back(MakeLayer(conv1, "ResNetConv1", stem));
  b.layers.back().lower = [conv = conv1->conv1.ptr()] {
    LayerLowering l;
    l.conv = conv;  // fuses with the stem's BN and ReLU layers
    return l;
  };
  if (bn) {
    b.layers.push_back(MakeLayer(nn::BatchNorm2d(stem), "BatchNorm2d", stem));
  } else {
    b.layers.push_back(MakeLayer(nn::Identity(), "Identity", stem));
  }
  b.layers.push_back(MakeLayer(nn::ReLU(), "ReLU", stem));
  b.layers.push_back(MakeLayer(ResNetMaxPool1(opt.variant), "ResNetMaxPool1", stem));
  b.layers.back().lower = [imagenet = opt.variant == Variant::kImagenet] {
    LayerLowering l;
    if (imagenet) {
      l.compile = [] {
        return [](const torch::Tensor& x) { return torch::max_pool2d(x, {3, 3}, {2, 2}, {1, 1}); };
      };
    } else {
      l.identity = true;
    }
    return l;
  };
  int64_t in = stem;
  const int64_t stage_planes[4] = {64, 128, 256, 512};
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = ScaledWidth(stage_planes[s], opt.width);
    for (int i = 0; i < cfg.blocks[s]; ++i) {
      const int64_t stride = (s > 0 && i == 0) ? 2 : 1;
      if (cfg.bottleneck) {
        const int64_t out = planes * 4;
        Bottleneck block(in, planes, out, stride, bn);
        ReferenceInit(*block);
        block->ZeroInitLast();
        b.layers.push_back(MakeLayer(block, "ResidualBottleneck", out));
        b.layers.back().lower = [block] { return LowerBottleneck(block.ptr()); };
        in = out;
      } else {
        BasicBlock block(in, planes, stride, bn);
        ReferenceInit(*block);
        block->ZeroInitLast();
        b.layers.push_back(MakeLayer(block, "BasicBlock", planes));
        b.layers.back().lower = [block] { return LowerBasicBlock(block.ptr()); };
        in = planes;
      }
    }
  }
  for (int i = 0; i < 2; ++i) ReferenceInit(*b.layers[i].module);
  b.head = HeadConfig{HeadKind::kPoolLinear, 0, 0.0};
  return b;
}

absl::StatusOr<Backbone> BuildVgg(const std::vector<int>& cfg, bool bn,
                                  const BackboneOptions& opt) {
  Backbone b;
  int64_t channels = 3;
  for (int v : cfg) {
    if (v == 0) {  // 'M'
      b.layers.push_back(MakeLayer(nn::MaxPool2d(nn::MaxPool2dOptions(2).stride(2)),
                                   "MaxPool2d", channels));
      continue;
    }
    const int64_t out = ScaledWidth(v, opt.width);
    nn::Conv2d conv = Conv(channels, out, 3, 1, 1, true);
    ReferenceInit(*conv);
    b.layers.push_back(MakeLayer(conv, "Conv2d", out));
    if (bn) {
      nn::BatchNorm2d norm(out);
      ReferenceInit(*norm);
      b.layers.push_back(MakeLayer(norm, "BatchNorm2d", out));
    }
    b.layers.push_back(MakeLayer(nn::ReLU(), "ReLU", out));
    channels = out;
  }
  if (opt.variant == Variant::kImagenet) {
    // The reference's VGG classifier (ConvMlp 7x7 -> 4096 -> 4096).
    b.head = HeadConfig{HeadKind::kConvMlp, ScaledWidth(4096, opt.width), 0.2};
  } else {
    // On 32x32 inputs the reference head would cost ~100M parameters per exit;
    // eenn's CIFAR default is a pooled MLP of the last stage's width.
    b.head = HeadConfig{HeadKind::kPoolLinear, ScaledWidth(512, opt.width), 0.2};
  }
  return b;
}

struct Registry {
  absl::Mutex mu;
  std::map<std::string, BackboneFactory> factories ABSL_GUARDED_BY(mu);
};

void RegisterBuiltins(Registry& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
  const std::map<std::string, ResNetConfig> resnets = {
      {"resnet18", {false, {2, 2, 2, 2}}},
      {"resnet34", {false, {3, 4, 6, 3}}},
      {"resnet50", {true, {3, 4, 6, 3}}},
      {"resnet101", {true, {3, 4, 23, 3}}},
  };
  for (const auto& [name, cfg] : resnets) {
    r.factories[name] = [cfg = cfg](const BackboneOptions& o) {
      return BuildResNet(cfg, true, o);
    };
    r.factories[name + "_nobn"] = [cfg = cfg](const BackboneOptions& o) {
      return BuildResNet(cfg, false, o);
    };
  }
  const std::map<std::string, std::vector<int>> vggs = {
      {"vgg11", {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}},
      {"vgg13", {64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}},
      {"vgg16",
       {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0}},
      {"vgg19", {64,  64,  0,   128, 128, 0,   256, 256, 256, 256, 0,
                 512, 512, 512, 512, 0,   512, 512, 512, 512, 0}},
  };
  for (const auto& [name, cfg] : vggs) {
    r.factories[name] = [cfg = cfg](const BackboneOptions& o) { return BuildVgg(cfg, false, o); };
    r.factories[name + "_bn"] = [cfg = cfg](const BackboneOptions& o) {
      return BuildVgg(cfg, true, o);
    };
  }
}

Registry& GetRegistry() {
  static Registry* registry = new Registry();  // never destroyed
  return *registry;
}

}  // namespace

int64_t ScaledWidth(int64_t channels, double width) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::lround(channels * width)));
}

void ReferenceInit(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/true)) {
    if (auto* conv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) nn::init::zeros_(conv->bias);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      if (bn->weight.defined()) nn::init::ones_(bn->weight);
      if (bn->bias.defined()) nn::init::zeros_(bn->bias);
    } else if (auto* lin = m->as<nn::Linear>()) {
      nn::init::normal_(lin->weight, 0.0, 0.01);
      if (lin->bias.defined()) nn::init::zeros_(lin->bias);
    }
  }
}

absl::Status RegisterBackbone(const std::string& name, BackboneFactory factory) {
  if (name.empty() || !factory) {
    return absl::InvalidArgumentError("RegisterBackbone needs a name and a factory");
  }
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  if (r.factories.empty()) RegisterBuiltins(r);
  if (!r.factories.emplace(name, std::move(factory)).second) {
    return absl::AlreadyExistsError(absl::StrCat("backbone '", name, "' is already registered"));
  }
  return absl::OkStatus();
}

std::vector<std::string> RegisteredBackbones() {
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  if (r.factories.empty()) RegisterBuiltins(r);
  std::vector<std::string> names;
  for (const auto& [name, f] : r.factories) names.push_back(name);
  return names;
}

absl::StatusOr<Backbone> BuildBackbone(const std::string& name, const BackboneOptions& options) {
  if (options.num_classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes must be at least 2, got ", options.num_classes));
  }
  if (!(options.width > 0.0) || options.width > 16.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("width multiplier must be in (0, 16], got ", options.width));
  }
  BackboneFactory factory;
  {
    Registry& r = GetRegistry();
    absl::MutexLock lock(&r.mu);
    if (r.factories.empty()) RegisterBuiltins(r);
    auto it = r.factories.find(name);
    if (it == r.factories.end()) {
      std::string known;
      for (const auto& [n, f] : r.factories) absl::StrAppend(&known, known.empty() ? "" : ", ", n);
      return absl::NotFoundError(
          absl::StrCat("unknown architecture '", name, "'; registered: ", known));
    }
    factory = it->second;
  }
  absl::StatusOr<Backbone> built;
  try {
    built = factory(options);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building '", name, "' failed: ", e.what()));
  }
  if (!built.ok()) return built.status();
  if (built->layers.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("architecture '", name, "' has no layers"));
  }
  for (size_t i = 0; i < built->layers.size(); ++i) {
    const BackboneLayer& l = built->layers[i];
    if (!l.module || !l.forward || l.feature_dim <= 0 || l.class_name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "architecture '", name, "' layer ", i,
          " is incomplete (needs a module, a forward, a class name and a positive feature_dim)"));
    }
  }
  if (built->input_shape.empty()) {
    built->input_shape = options.variant == Variant::kCifar ? std::vector<int64_t>{3, 32, 32}
                                                            : std::vector<int64_t>{3, 224, 224};
  }
  return built;
}

}  // namespace eenn::common
