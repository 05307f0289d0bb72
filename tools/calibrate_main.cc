// eenn-calibrate: searches per-exit thresholds on the validation split the
// trainer held out, minimising the expected batch-1 compute measured on this
// machine under an accuracy floor, and writes them into the bundle.
//
//   eenn-calibrate --bundle models/cifar10-resnet18 --data_dir ../shared/datasets/cifar10
//     --max_drop 1.0
//
// With --configs it also writes the load-aware exit configurations
// (common/config_set.h) for eenn-device's load controller: the Pareto-optimal
// thresholds of the device's exits over accuracy floors down to
// --configs_max_drop, from the same validation data and layer costs;
// --configs_only leaves the bundle's thresholds as they are.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/bundle.h"
#include "common/calibration.h"
#include "common/cli.h"
#include "common/config_set.h"
#include "common/exit_outputs.h"
#include "common/layer_costs.h"
#include "common/manifest.h"
#include "common/threads.h"
#include "tools/bundle_data.h"

ABSL_FLAG(std::string, bundle, "", "Bundle to calibrate (updated in place unless --out).");
ABSL_FLAG(std::string, out, "", "Write the calibrated bundle here instead.");
ABSL_FLAG(std::string, dataset, "folder", "Dataset format (folder, cifar10-bin, mnist, fashion-mnist).");
ABSL_FLAG(std::string, data_dir, "", "Dataset root (its train split holds the validation samples).");
ABSL_FLAG(double, max_drop, 1.0, "Allowed accuracy drop against the final exit, in points.");
ABSL_FLAG(double, target_accuracy, -1, "Absolute accuracy floor in percent (overrides --max_drop).");
ABSL_FLAG(double, val_ratio, -1, "Validation share (default: the trainer's, from the bundle).");
ABSL_FLAG(int, seed, -1, "Split seed (default: the trainer's, from the bundle).");
ABSL_FLAG(int, threads, 2, "LibTorch threads (also the setting whose latency is minimised).");
ABSL_FLAG(bool, json, false, "Print the report as one JSON object.");
ABSL_FLAG(std::string, configs, "",
          "Also write load-aware exit configurations here ('bundle': configs.json in the output bundle).");
ABSL_FLAG(std::vector<std::string>, configs_splits, {},
          "Split layers to make configurations for (default: the device's default, after the last early exit).");
ABSL_FLAG(double, configs_max_drop, 10.0, "Deepest accuracy floor of the configurations, in points below the best.");
ABSL_FLAG(double, configs_step, 0.25, "Accuracy floor step of the configurations, in points.");
ABSL_FLAG(bool, configs_only, false,
          "Only write the configurations (with --configs): the bundle's thresholds stay as they are.");

namespace {
int Fail(const absl::Status& s) {
  std::cerr << "eenn-calibrate: " << s << "\n";
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  eenn::common::ParseFlags(argc, argv,
      "Calibrate the exit thresholds of a bundle on its validation split.\n"
      "  eenn-calibrate --bundle DIR --data_dir DIR [--max_drop 1.0 | --target_accuracy A] "
      "[--configs bundle|FILE]");
  if (absl::GetFlag(FLAGS_bundle).empty() || absl::GetFlag(FLAGS_data_dir).empty()) {
    std::cerr << "usage: eenn-calibrate --bundle DIR --data_dir DIR [--max_drop 1.0 | --target_accuracy A] "
                 "[--configs bundle|FILE] (see --help)\n";
    return 2;
  }
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) return Fail(s);
  auto bundle = eenn::common::LoadBundle(absl::GetFlag(FLAGS_bundle));
  if (!bundle.ok()) return Fail(bundle.status());
  auto train = eenn::tools::LoadForBundle(*bundle, absl::GetFlag(FLAGS_dataset),
                                          absl::GetFlag(FLAGS_data_dir), "train");
  if (!train.ok()) return Fail(train.status());
  auto val = eenn::tools::ValidationIndices(*bundle, *train, absl::GetFlag(FLAGS_val_ratio),
                                            absl::GetFlag(FLAGS_seed));
  if (!val.ok()) return Fail(val.status());

  auto& net = *bundle->model;
  std::fprintf(stderr, "eenn-calibrate: %zu validation samples, %d exits\n", val->size(), net.num_exits());
  eenn::common::ExitOutputs outputs = eenn::common::CollectExitOutputs(
      net, *train, *val, bundle->manifest.input, bundle->policy.confidence);
  eenn::common::LayerCosts costs = eenn::common::MeasureLayerCosts(net);
  eenn::common::CalibrationData data =
      outputs.ToCalibrationData(costs.SegmentMs(net.exit_layers()), costs.head_ms);
  eenn::common::CalibrationTarget target;
  target.max_drop = absl::GetFlag(FLAGS_max_drop) / 100.0;
  if (absl::GetFlag(FLAGS_target_accuracy) >= 0) target.min_accuracy = absl::GetFlag(FLAGS_target_accuracy) / 100.0;
  const bool configs_only = absl::GetFlag(FLAGS_configs_only);
  if (configs_only && absl::GetFlag(FLAGS_configs).empty()) {
    return Fail(absl::InvalidArgumentError("--configs_only needs --configs"));
  }
  auto result = configs_only ? absl::StatusOr<eenn::common::CalibrationResult>(
                                   eenn::common::EvaluateThresholds(data, bundle->manifest.thresholds))
                             : eenn::common::Calibrate(data, target);
  if (!result.ok()) return Fail(result.status());
  const std::string out = absl::GetFlag(FLAGS_out).empty() ? absl::GetFlag(FLAGS_bundle) : absl::GetFlag(FLAGS_out);

  // Load-aware configurations: the thresholds past the split are the bundle's (new) ones.
  nlohmann::json configs_report = nullptr;
  eenn::common::ConfigSet config_set;
  std::string configs_path = absl::GetFlag(FLAGS_configs);
  if (!configs_path.empty()) {
    if (configs_path == "bundle") configs_path = out + "/configs.json";
    eenn::common::ConfigSweepInput in;
    in.data = data;
    in.exit_layers = net.exit_layers();
    in.layer_cost = costs.layer_ms;
    in.bundle_thresholds = result->thresholds;
    eenn::common::ConfigSweepOptions so;
    so.max_drop = absl::GetFlag(FLAGS_configs_max_drop) / 100.0;
    so.step = absl::GetFlag(FLAGS_configs_step) / 100.0;
    for (const std::string& v : absl::GetFlag(FLAGS_configs_splits)) {
      int split = 0;
      if (!absl::SimpleAtoi(v, &split)) {
        return Fail(absl::InvalidArgumentError(absl::StrCat("--configs_splits: '", v, "' is not a layer index")));
      }
      so.splits.push_back(split);
    }
    if (so.splits.empty()) {
      const auto& exits = net.exit_layers();
      so.splits.push_back(exits.size() >= 2 ? exits[exits.size() - 2] + 1 : net.num_layers());
    }
    auto front = eenn::common::SweepConfigs(in, so);
    if (!front.ok()) return Fail(front.status());
    config_set.model_name = bundle->manifest.model_name;
    config_set.model_version = bundle->manifest.model_version;
    config_set.exit_layers = net.exit_layers();
    config_set.bundle_thresholds = result->thresholds;
    config_set.final_exit_accuracy = result->final_exit_accuracy;
    config_set.configs = std::move(*front);
    configs_report = nlohmann::json::array();
    for (const auto& c : config_set.configs) {
      configs_report.push_back({{"split", c.split}, {"accuracy", c.accuracy}, {"device_ms", c.device_ms},
                                {"offload_share", c.offload_share}, {"thresholds", c.thresholds}});
    }
  }

  nlohmann::json histogram = nlohmann::json::object();
  for (int g = 0; g < net.num_exits(); ++g) {
    histogram[std::to_string(net.exit_layers()[g])] = result->exit_share[g];
  }
  nlohmann::json report = {
      {"validation_samples", val->size()},
      {"final_exit_accuracy", result->final_exit_accuracy},
      {"calibrated_accuracy", result->accuracy},
      {"calibrated_accuracy_stderr", result->accuracy_stderr},
      {"drop", result->final_exit_accuracy - result->accuracy},
      {"drop_stderr", result->drop_stderr},
      {"per_exit_accuracy", outputs.ExitAccuracy()},
      {"thresholds", result->thresholds},
      {"exit_share", histogram},
      {"expected_ms", result->expected_cost},
      {"full_ms", result->full_cost},
      {"expected_speedup", result->full_cost / std::max(result->expected_cost, 1e-9)},
      {"max_drop_points", absl::GetFlag(FLAGS_max_drop)},
      {"threads", absl::GetFlag(FLAGS_threads)},
      {"layer_ms", costs.layer_ms},
      {"head_ms", costs.head_ms}};
  if (!configs_report.is_null()) report["configs"] = configs_report;

  if (!configs_path.empty() && configs_only) {
    config_set.weights_sha256 = bundle->manifest.weights_sha256;
    if (auto s = eenn::common::WriteConfigSet(configs_path, config_set); !s.ok()) return Fail(s);
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << report.dump() << "\n";
    } else {
      std::printf("validation: %zu samples; bundle thresholds %.2f%% (final exit %.2f%%)\n", val->size(),
                  100 * result->accuracy, 100 * result->final_exit_accuracy);
      std::printf("split | accuracy | device ms | offload share\n");
      for (const auto& c : config_set.configs) {
        std::printf("%5d | %7.2f%% | %9.3f | %6.1f%%\n", c.split, 100 * c.accuracy, c.device_ms,
                    100 * c.offload_share);
      }
      std::printf("wrote %zu configurations to %s\n", config_set.configs.size(), configs_path.c_str());
    }
    return 0;
  }

  eenn::common::BundleManifest m = bundle->manifest;
  m.thresholds = result->thresholds;
  nlohmann::json meta = nlohmann::json::parse(m.metadata_json, nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) meta = nlohmann::json::object();
  meta["calibrated"] = true;
  meta["calibration"] = report;
  m.metadata_json = meta.dump();
  if (auto s = eenn::common::SaveBundle(out, m, net); !s.ok()) return Fail(s);
  if (!configs_path.empty()) {
    // The checksum of the weights as saved.
    auto saved = eenn::common::ReadManifest(out);
    if (!saved.ok()) return Fail(saved.status());
    config_set.weights_sha256 = saved->weights_sha256;
    if (auto s = eenn::common::WriteConfigSet(configs_path, config_set); !s.ok()) return Fail(s);
  }

  if (absl::GetFlag(FLAGS_json)) {
    std::cout << report.dump() << "\n";
  } else {
    std::printf("validation: %zu samples; final exit %.2f%%, calibrated %.2f%% (drop %.2f points)\n",
                val->size(), 100 * result->final_exit_accuracy, 100 * result->accuracy,
                100 * (result->final_exit_accuracy - result->accuracy));
    // 95% intervals from the sampling error alone: the drop, a paired difference, is
    // estimated far more tightly than the absolute accuracy.
    std::printf("sampling error (95%%): calibrated accuracy +-%.2f points, drop +-%.2f points\n",
                196 * result->accuracy_stderr, 196 * result->drop_stderr);
    std::printf("expected %.3f ms vs %.3f ms without exits: %.2fx faster\n", result->expected_cost,
                result->full_cost, result->full_cost / std::max(result->expected_cost, 1e-9));
    std::printf("exit layer | threshold | share | exit accuracy\n");
    for (int g = 0; g < net.num_exits(); ++g) {
      std::printf("%10d | %9.4f | %5.1f%% | %6.2f%%\n", net.exit_layers()[g], result->thresholds[g],
                  100 * result->exit_share[g], 100 * outputs.ExitAccuracy()[g]);
    }
    std::printf("wrote %s\n", out.c_str());
    if (!configs_path.empty()) {
      std::printf("wrote %zu load-aware configurations to %s\n", config_set.configs.size(), configs_path.c_str());
    }
  }
  return 0;
}
