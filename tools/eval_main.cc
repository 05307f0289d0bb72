// eenn-eval: accuracy of every exit on a dataset split, and accuracy and mean
// batch-1 latency with and without early exits, in the reference's table.
//
//   eenn-eval --bundle models/cifar10-resnet18 --data_dir ../shared/datasets/cifar10 [--json]
//
// Latency is the model time per sample (preprocessed tensor in, answer out),
// as the reference measures it; the two paths alternate sample by sample so
// machine noise hits both alike.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "common/bundle.h"
#include "common/cli.h"
#include "common/exit_outputs.h"
#include "common/tensor_batch.h"
#include "common/threads.h"
#include "tools/bundle_data.h"

ABSL_FLAG(std::string, bundle, "", "Bundle to evaluate.");
ABSL_FLAG(std::string, dataset, "folder", "Dataset format (folder, cifar10-bin, mnist, fashion-mnist).");
ABSL_FLAG(std::string, data_dir, "", "Dataset root.");
ABSL_FLAG(std::string, split, "test", "Split to evaluate: test, or val (the trainer's held-out part of train).");
ABSL_FLAG(std::string, dataset_name, "CIFAR-10", "Dataset name for the table.");
ABSL_FLAG(int, limit, 0, "Evaluate a stratified subset of about N samples (0 = all).");
ABSL_FLAG(int, threads, 2, "LibTorch threads.");
ABSL_FLAG(bool, json, false, "Print one JSON object.");

namespace {
int Fail(const absl::Status& s) {
  std::cerr << "eenn-eval: " << s << "\n";
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  eenn::common::ParseFlags(argc, argv,
      "Per-exit accuracy and batch-1 latency with and without exits.\n"
      "  eenn-eval --bundle DIR --data_dir DIR [--split test|val] [--json]");
  if (absl::GetFlag(FLAGS_bundle).empty() || absl::GetFlag(FLAGS_data_dir).empty()) {
    std::cerr << "usage: eenn-eval --bundle DIR --data_dir DIR [--split test|val] [--json] (see --help)\n";
    return 2;
  }
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) return Fail(s);
  auto bundle = eenn::common::LoadBundle(absl::GetFlag(FLAGS_bundle));
  if (!bundle.ok()) return Fail(bundle.status());
  const bool val = absl::GetFlag(FLAGS_split) == "val";
  auto data = eenn::tools::LoadForBundle(*bundle, absl::GetFlag(FLAGS_dataset),
                                         absl::GetFlag(FLAGS_data_dir), val ? "train" : absl::GetFlag(FLAGS_split));
  if (!data.ok()) return Fail(data.status());
  std::vector<int64_t> indices;
  if (val) {
    auto v = eenn::tools::ValidationIndices(*bundle, *data);
    if (!v.ok()) return Fail(v.status());
    indices = *v;
  } else {
    for (int64_t i = 0; i < data->size(); ++i) indices.push_back(i);
  }
  if (absl::GetFlag(FLAGS_limit) > 0 && static_cast<size_t>(absl::GetFlag(FLAGS_limit)) < indices.size()) {
    // A stratified subset: folders are sorted by class, so the first N would be one class.
    std::vector<int64_t> labels;
    for (int64_t i : indices) labels.push_back(data->labels[i]);
    auto [rest, keep] = eenn::common::SplitIndices(
        labels, static_cast<double>(absl::GetFlag(FLAGS_limit)) / indices.size(), 0);
    std::vector<int64_t> subset;
    for (int64_t k : keep) subset.push_back(indices[k]);
    indices = subset;
  }
  auto& net = *bundle->model;
  const auto& manifest = bundle->manifest;
  eenn::common::ExitOutputs outputs =
      eenn::common::CollectExitOutputs(net, *data, indices, manifest.input, bundle->policy.confidence);
  std::vector<double> per_exit = outputs.ExitAccuracy();

  eenn::common::ExitPolicy full = bundle->policy;
  for (size_t g = 0; g + 1 < full.thresholds.size(); ++g) full.thresholds[g] = -1.0f;
  std::vector<double> full_ms, eenn_ms;
  int64_t full_correct = 0, eenn_correct = 0;
  std::map<int, int64_t> histogram;
  std::mt19937_64 rng(0);
  // Warm-up.
  for (size_t i = 0; i < std::min<size_t>(20, indices.size()); ++i) {
    auto [x, y] = eenn::common::MakeBatch(*data, {indices[i]}, manifest.input, {}, rng);
    (void)net.Classify(x, bundle->policy);
    (void)net.Classify(x, full);
  }
  for (size_t i = 0; i < indices.size(); ++i) {
    auto [x, y] = eenn::common::MakeBatch(*data, {indices[i]}, manifest.input, {}, rng);
    const int64_t label = y[0].item<int64_t>();
    for (int k = 0; k < 2; ++k) {
      const bool early = (k == 0) == (i % 2 == 0);
      const auto t0 = std::chrono::steady_clock::now();
      auto r = net.Classify(x, early ? bundle->policy : full);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (!r.ok()) return Fail(r.status());
      if (early) {
        eenn_ms.push_back(ms);
        eenn_correct += (*r)[0].class_id == label;
        ++histogram[(*r)[0].exit_layer];
      } else {
        full_ms.push_back(ms);
        full_correct += (*r)[0].class_id == label;
      }
    }
    if (!absl::GetFlag(FLAGS_json) && (i + 1) % 1000 == 0) {
      std::fprintf(stderr, "\reenn-eval: %zu/%zu", i + 1, indices.size());
    }
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0.0 : s / v.size();
  };
  const double n = static_cast<double>(indices.size());
  const double full_acc = 100.0 * full_correct / n, eenn_acc = 100.0 * eenn_correct / n;
  const double fm = mean(full_ms), em = mean(eenn_ms);
  nlohmann::json hist = nlohmann::json::object();
  for (auto& [l, c] : histogram) hist[std::to_string(l)] = c;
  nlohmann::json exits = nlohmann::json::object();
  for (int g = 0; g < net.num_exits(); ++g) exits[std::to_string(net.exit_layers()[g])] = 100.0 * per_exit[g];
  // What eenn-calibrate promised on validation (the bundle's metadata), against this split.
  nlohmann::json promise = nullptr;
  {
    const nlohmann::json meta = nlohmann::json::parse(manifest.metadata_json, nullptr, false);
    if (meta.is_object() && meta.contains("calibration") && meta["calibration"].is_object()) {
      const nlohmann::json& c = meta["calibration"];
      if (c.contains("calibrated_accuracy") && c["calibrated_accuracy"].is_number() &&
          c.contains("final_exit_accuracy") && c["final_exit_accuracy"].is_number()) {
        const double acc = 100 * c["calibrated_accuracy"].get<double>();
        const double drop = 100 * c["final_exit_accuracy"].get<double>() - acc;
        promise = {{"accuracy", acc},
                   {"drop", drop},
                   {"accuracy_difference", eenn_acc - acc},
                   {"drop_difference", (full_acc - eenn_acc) - drop}};
        if (c.contains("validation_samples")) promise["validation_samples"] = c["validation_samples"];
        if (c.contains("calibrated_accuracy_stderr") && c["calibrated_accuracy_stderr"].is_number()) {
          promise["accuracy_ci95"] = 196 * c["calibrated_accuracy_stderr"].get<double>();
        }
        if (c.contains("drop_stderr") && c["drop_stderr"].is_number()) {
          promise["drop_ci95"] = 196 * c["drop_stderr"].get<double>();
        }
        // Thresholds changed since (edited by hand, or another bundle's metadata):
        // the promise was made for others.
        if (c.contains("thresholds") && c["thresholds"].is_array()) {
          std::vector<float> t;
          for (const auto& v : c["thresholds"]) t.push_back(v.is_number() ? v.get<float>() : -2.0f);
          promise["stale"] = t != bundle->policy.thresholds;
        }
      }
    }
  }
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j = {{"bundle", absl::GetFlag(FLAGS_bundle)},
                        {"split", absl::GetFlag(FLAGS_split)},
                        {"samples", indices.size()},
                        {"threads", absl::GetFlag(FLAGS_threads)},
                        {"final_exit_accuracy", full_acc},
                        {"eenn_accuracy", eenn_acc},
                        {"full_ms_per_sample", fm},
                        {"eenn_ms_per_sample", em},
                        {"latency_ratio", em / fm},
                        {"exit_histogram", hist},
                        {"per_exit_accuracy", exits},
                        {"thresholds", bundle->policy.thresholds}};
    if (!promise.is_null()) j["calibration_promise"] = promise;
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::fprintf(stderr, "\n");
  std::string model = manifest.spec.architecture;
  model[0] = absl::ascii_toupper(model[0]);
  std::printf("per-exit accuracy on %s (%zu samples):\n", absl::GetFlag(FLAGS_split).c_str(), indices.size());
  for (int g = 0; g < net.num_exits(); ++g) {
    std::printf("  exit at layer %2d: %6.2f%%\n", net.exit_layers()[g], 100.0 * per_exit[g]);
  }
  std::printf("\n| Dataset | Model Type | Accuracy (%%) | Inference Time (ms/sample) |\n");
  std::printf("|---|---|---|---|\n");
  const std::string ds = absl::GetFlag(FLAGS_dataset_name);
  std::printf("| %s | %s | %.2f | %.2f |\n", ds.c_str(), model.c_str(), full_acc, fm);
  std::printf("| %s | EENN-%s | %.2f | %.2f |\n", ds.c_str(), model.c_str(), eenn_acc, em);
  std::printf("\nlatency with exits / without: %.3f; exit histogram (layer: samples):", em / fm);
  for (auto& [l, c] : histogram) std::printf(" %d:%lld", l, static_cast<long long>(c));
  std::printf("\n");
  if (!promise.is_null()) {
    if (promise.value("stale", false)) std::printf("(the bundle's thresholds are not the calibrated ones) ");
    std::printf("calibration promised on validation: %.2f%%", promise["accuracy"].get<double>());
    if (promise.contains("accuracy_ci95")) std::printf(" +-%.2f", promise["accuracy_ci95"].get<double>());
    std::printf(", drop %.2f", promise["drop"].get<double>());
    if (promise.contains("drop_ci95")) std::printf(" +-%.2f", promise["drop_ci95"].get<double>());
    std::printf(" points; here %.2f%% (%+.2f), drop %.2f (%+.2f)\n", eenn_acc,
                promise["accuracy_difference"].get<double>(), full_acc - eenn_acc,
                promise["drop_difference"].get<double>());
  }
  return 0;
}
