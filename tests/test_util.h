// Helpers shared by eenn's tests: deterministic weight perturbation and a
// tiny registered backbone (plus the torch-free file helpers of file_util.h).
#ifndef EENN_TESTS_TEST_UTIL_H_
#define EENN_TESTS_TEST_UTIL_H_

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/zoo.h"
#include "tests/file_util.h"

namespace eenn::testing {

// Gives every batch norm non-trivial affine parameters and running statistics
// and re-draws every other parameter, so no block is an identity (the
// reference's zero-init of the last BN would otherwise hide errors).
inline void Perturb(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& mod : m.modules()) {
    if (auto* bn = mod->as<torch::nn::BatchNorm2d>()) {
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.2, 0.2);
      bn->running_mean.uniform_(-0.2, 0.2);
      bn->running_var.uniform_(0.5, 2.0);
    }
  }
  for (auto& p : m.named_parameters()) {
    if (p.key().find("gates") != std::string::npos) p.value().mul_(5.0);  // sharper heads
  }
}

// "test_tiny": four layers on 3x8x8 inputs: conv(3->8), relu, conv(8->8), relu.
inline void RegisterTinyBackbone() {
  static bool done = [] {
    auto s = common::RegisterBackbone("test_tiny", [](const common::BackboneOptions& o) {
      common::Backbone b;
      namespace nn = torch::nn;
      b.layers.push_back(common::MakeLayer(
          nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1)), "Conv2d", 8));
      b.layers.push_back(common::MakeLayer(nn::ReLU(), "ReLU", 8));
      b.layers.push_back(common::MakeLayer(
          nn::Conv2d(nn::Conv2dOptions(8, 8, 3).padding(1)), "Conv2d", 8));
      b.layers.push_back(common::MakeLayer(nn::ReLU(), "ReLU", 8));
      b.head = common::HeadConfig{common::HeadKind::kPoolLinear, 0, 0.0};
      b.input_shape = {3, 8, 8};
      return absl::StatusOr<common::Backbone>(std::move(b));
    });
    return s.ok();
  }();
  (void)done;
}

}  // namespace eenn::testing

#endif  // EENN_TESTS_TEST_UTIL_H_
