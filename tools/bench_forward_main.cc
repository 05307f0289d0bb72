// eenn-bench-forward: times batch-1 (or batch-B) full forward passes of a zoo
// architecture, for side-by-side comparison with PyTorch (see
// tools/bench/forward_vs_pytorch.py, which runs this binary and PyTorch eager
// in alternating rounds).
//
// Each pass is EarlyExitNet::Classify, the serving path, on the oneDNN path
// (or the dense modules with --onednn=false), with the exits off, evaluated
// but never firing, or at the bundle's thresholds (--exits).
//
// Prints one JSON object: {"architecture", "variant", "threads", "batch",
// "onednn", "exits", "times_ms": [...], "by_exits": {mode: [...]}}, one
// entry per timed iteration (times_ms: the first --exits mode).
#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/bundle.h"
#include "common/cli.h"
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
ABSL_FLAG(std::string, exit_layers, "", "Zoo model: exit layers, comma-separated (the final is added).");
ABSL_FLAG(std::string, save_bundle, "",
          "Zoo model: also write it as a bundle here (random weights; for side-by-side runs that "
          "need the same weights, e.g. tools/eenn-bench).");
ABSL_FLAG(bool, onednn, true,
          "Run on the oneDNN path (batch norm folded, prepacked weights); false: the dense modules.");
ABSL_FLAG(std::string, exits, "off",
          "Comma-separated; several alternate iteration by iteration. "
          "off: the full network, exits not evaluated; never: every exit evaluated, none fires "
          "(the cost of the heads); bundle: the bundle's thresholds; bundle_never: the exits the bundle "
          "evaluates (threshold >= 0), none firing (the cost of its heads as deployed).");

int main(int argc, char** argv) {
  eenn::common::ParseFlags(argc, argv,
      "Batch-1 forward timing of a zoo model (the C++ half of tools/bench/forward_vs_pytorch.py).\n"
      "  eenn-bench-forward --model NAME [--threads N] [options]");
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) {
    std::cerr << s << "\n";
    return 2;
  }
  std::shared_ptr<eenn::common::EarlyExitNet> net;
  eenn::common::ExitPolicy bundle_policy;
  if (!absl::GetFlag(FLAGS_bundle).empty()) {
    auto b = eenn::common::LoadBundle(absl::GetFlag(FLAGS_bundle));
    if (!b.ok()) {
      std::cerr << b.status() << "\n";
      return 2;
    }
    net = b->model;
    bundle_policy = b->policy;
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
    for (absl::string_view e : absl::StrSplit(absl::GetFlag(FLAGS_exit_layers), ',', absl::SkipEmpty())) {
      int layer = 0;
      if (!absl::SimpleAtoi(e, &layer)) {
        std::cerr << "--exit_layers: '" << e << "' is not a layer index\n";
        return 2;
      }
      spec.exit_layers.push_back(layer);
    }
    auto created = eenn::common::EarlyExitNet::Create(spec);
    if (!created.ok()) {
      std::cerr << created.status() << "\n";
      return 2;
    }
    net = *created;
    if (!absl::GetFlag(FLAGS_save_bundle).empty()) {
      auto manifest = eenn::common::DefaultManifest(*net, spec.architecture, "1");
      manifest.class_names.clear();
      for (int c = 0; c < spec.num_classes; ++c) manifest.class_names.push_back(absl::StrCat("class", c));
      if (auto s = eenn::common::SaveBundle(absl::GetFlag(FLAGS_save_bundle), manifest, *net); !s.ok()) {
        std::cerr << s << "\n";
        return 2;
      }
    }
  }
  if (auto s = net->SetOneDnn(absl::GetFlag(FLAGS_onednn)); !s.ok()) {
    std::cerr << s << "\n";
    return 2;
  }
  // One policy per --exits entry; with several, iterations alternate between
  // them so that machine noise hits each alike.
  std::vector<std::string> modes = absl::StrSplit(absl::GetFlag(FLAGS_exits), ',', absl::SkipEmpty());
  std::vector<eenn::common::ExitPolicy> policies;
  for (const std::string& mode : modes) {
    eenn::common::ExitPolicy policy;
    policy.thresholds.assign(net->num_exits(), -1.0f);  // negative: exit not evaluated
    if (mode == "never") {
      policy.thresholds.assign(net->num_exits(), 2.0f);  // confidences never exceed 1
    } else if (mode == "bundle" || mode == "bundle_never") {
      if (absl::GetFlag(FLAGS_bundle).empty()) {
        std::cerr << "--exits=" << mode << " needs --bundle\n";
        return 2;
      }
      policy = mode == "bundle_never" ? eenn::common::NeverFiring(bundle_policy) : bundle_policy;
    } else if (mode != "off") {
      std::cerr << "--exits entries must be off, never, bundle or bundle_never, got '" << mode << "'\n";
      return 2;
    }
    policies.push_back(policy);
  }
  if (policies.empty()) {
    std::cerr << "--exits is empty\n";
    return 2;
  }
  std::vector<int64_t> shape = {absl::GetFlag(FLAGS_batch)};
  shape.insert(shape.end(), net->input_shape().begin(), net->input_shape().end());
  torch::manual_seed(0);
  torch::Tensor x = torch::randn(shape);
  std::vector<std::vector<double>> times(policies.size());
  torch::InferenceMode guard;
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup) + absl::GetFlag(FLAGS_iters); ++i) {
    for (size_t k = 0; k < policies.size(); ++k) {
      const size_t m = (k + static_cast<size_t>(i)) % policies.size();  // rotating order
      const auto t0 = std::chrono::steady_clock::now();
      auto r = net->Classify(x, policies[m]);
      if (!r.ok()) {
        std::cerr << r.status() << "\n";
        return 1;
      }
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i >= absl::GetFlag(FLAGS_warmup)) times[m].push_back(ms);
    }
  }
  nlohmann::json by_exits = nlohmann::json::object();
  for (size_t m = 0; m < modes.size(); ++m) by_exits[modes[m]] = times[m];
  nlohmann::json j = {{"architecture", net->spec().architecture},
                      {"variant", std::string(eenn::common::VariantName(net->spec().variant))},
                      {"threads", absl::GetFlag(FLAGS_threads)},
                      {"batch", absl::GetFlag(FLAGS_batch)},
                      {"onednn", net->onednn()},
                      {"exits", absl::GetFlag(FLAGS_exits)},
                      {"times_ms", times[0]},
                      {"by_exits", by_exits}};
  std::cout << j.dump() << "\n";
  return 0;
}
