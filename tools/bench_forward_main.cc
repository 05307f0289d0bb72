// eenn-bench-forward: times batch-1 (or batch-B) full forward passes of a zoo
// architecture, for side-by-side comparison with PyTorch (see
// tools/bench/forward_vs_pytorch.py, which runs this binary and PyTorch eager
// in alternating rounds).
//
// Prints one JSON object: {"architecture", "variant", "threads", "batch",
// "times_ms": [...]} with one entry per timed iteration.
#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/bundle.h"
#include "common/eenn_model.h"
#include "common/threads.h"

ABSL_FLAG(std::string, model, "resnet50", "Zoo architecture.");
ABSL_FLAG(std::string, variant, "cifar", "cifar or imagenet.");
ABSL_FLAG(std::string, bundle, "", "Time this bundle's network instead of a zoo model.");
ABSL_FLAG(int, num_classes, 10, "Classes.");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads.");
ABSL_FLAG(int, batch, 1, "Batch size.");
ABSL_FLAG(int, warmup, 10, "Untimed iterations first.");
ABSL_FLAG(int, iters, 50, "Timed iterations.");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) {
    std::cerr << s << "\n";
    return 2;
  }
  std::shared_ptr<eenn::common::EarlyExitNet> net;
  if (!absl::GetFlag(FLAGS_bundle).empty()) {
    auto b = eenn::common::LoadBundle(absl::GetFlag(FLAGS_bundle));
    if (!b.ok()) {
      std::cerr << b.status() << "\n";
      return 2;
    }
    net = b->model;
  } else {
    eenn::common::ModelSpec spec;
    spec.architecture = absl::GetFlag(FLAGS_model);
    auto v = eenn::common::ParseVariant(absl::GetFlag(FLAGS_variant));
    if (!v.ok()) {
      std::cerr << v.status() << "\n";
      return 2;
    }
    spec.variant = *v;
    spec.num_classes = absl::GetFlag(FLAGS_num_classes);
    auto created = eenn::common::EarlyExitNet::Create(spec);
    if (!created.ok()) {
      std::cerr << created.status() << "\n";
      return 2;
    }
    net = *created;
  }
  std::vector<int64_t> shape = {absl::GetFlag(FLAGS_batch)};
  shape.insert(shape.end(), net->input_shape().begin(), net->input_shape().end());
  torch::manual_seed(0);
  torch::Tensor x = torch::randn(shape);
  const int last = net->num_exits() - 1;
  std::vector<double> times;
  torch::InferenceMode guard;
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup) + absl::GetFlag(FLAGS_iters); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    torch::Tensor y = net->ForwardExit(x, last);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= absl::GetFlag(FLAGS_warmup)) times.push_back(ms);
  }
  nlohmann::json j = {{"architecture", net->spec().architecture},
                      {"variant", std::string(eenn::common::VariantName(net->spec().variant))},
                      {"threads", absl::GetFlag(FLAGS_threads)},
                      {"batch", absl::GetFlag(FLAGS_batch)},
                      {"times_ms", times}};
  std::cout << j.dump() << "\n";
  return 0;
}
