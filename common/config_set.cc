#include "common/config_set.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace eenn::common {
namespace {

constexpr double kEps = 1e-12;

absl::Status Validate(const ConfigSweepInput& in) {
  const CalibrationData& d = in.data;
  const size_t g_count = in.exit_layers.size();
  if (d.confidence.empty() || g_count == 0 || d.correct.size() != d.confidence.size() ||
      d.head_cost.size() != g_count || in.bundle_thresholds.size() != g_count) {
    return absl::InvalidArgumentError(
        "configuration sweep: empty data, or head costs / bundle thresholds that do not match the exits");
  }
  if (!std::is_sorted(in.exit_layers.begin(), in.exit_layers.end()) || in.exit_layers.front() < 0 ||
      in.exit_layers.back() + 1 != static_cast<int>(in.layer_cost.size())) {
    return absl::InvalidArgumentError(absl::StrCat("configuration sweep: exits [", absl::StrJoin(in.exit_layers, ","),
                                                   "] do not fit ", in.layer_cost.size(),
                                                   " layers with the final exit on the last"));
  }
  for (size_t i = 0; i < d.confidence.size(); ++i) {
    if (d.confidence[i].size() != g_count || d.correct[i].size() != g_count) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", i, " does not have ", g_count, " exits"));
    }
  }
  return absl::OkStatus();
}

bool Dominates(const ExitConfig& a, const ExitConfig& b) {
  const bool no_worse = a.accuracy + kEps >= b.accuracy && a.device_ms <= b.device_ms + kEps &&
                        a.offload_share <= b.offload_share + kEps;
  const bool better = a.accuracy > b.accuracy + kEps || a.device_ms < b.device_ms - kEps ||
                      a.offload_share < b.offload_share - kEps;
  return no_worse && better;
}

bool Same(const ExitConfig& a, const ExitConfig& b) {
  return std::abs(a.accuracy - b.accuracy) <= kEps && std::abs(a.device_ms - b.device_ms) <= kEps &&
         std::abs(a.offload_share - b.offload_share) <= kEps;
}

}  // namespace

ExitConfig EvaluateConfig(const ConfigSweepInput& in, int split, const std::vector<float>& thresholds) {
  const CalibrationData& d = in.data;
  const size_t g_count = in.exit_layers.size();
  ExitConfig c;
  c.split = split;
  c.thresholds = thresholds;
  // Exits on the device use `thresholds`, the others the bundle's.
  std::vector<float> t(g_count);
  size_t device_exits = 0;
  for (size_t g = 0; g < g_count; ++g) {
    const bool on_device = in.exit_layers[g] < split && g + 1 < g_count;
    if (on_device) device_exits = g + 1;
    t[g] = on_device ? thresholds[g] : in.bundle_thresholds[g];
    c.thresholds[g] = t[g];
  }
  c.thresholds.back() = 0.0f;
  // Device compute when leaving at each exit.
  c.exit_device_ms.assign(g_count, 0.0);
  c.exit_share.assign(g_count, 0.0);
  double heads = 0;
  for (size_t g = 0; g < device_exits; ++g) {
    if (t[g] >= 0) heads += d.head_cost[g];
    double layers = 0;
    for (int l = 0; l <= in.exit_layers[g]; ++l) layers += in.layer_cost[l];
    c.exit_device_ms[g] = layers + heads;
  }
  double to_split = 0;
  for (int l = 0; l < std::min<int>(split, in.layer_cost.size()); ++l) to_split += in.layer_cost[l];
  for (size_t g = device_exits; g < g_count; ++g) c.exit_device_ms[g] = to_split + heads;
  // Everything on the device: the final head runs there too.
  if (split >= static_cast<int>(in.layer_cost.size())) c.exit_device_ms.back() += d.head_cost.back();

  const size_t n = d.confidence.size();
  size_t correct = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t exit = ExitTaken(d, i, t);
    correct += d.correct[i][exit];
    c.exit_share[exit] += 1.0;
  }
  for (size_t g = 0; g < g_count; ++g) {
    c.exit_share[g] /= static_cast<double>(n);
    c.device_ms += c.exit_share[g] * c.exit_device_ms[g];
    c.device_ms_m2 += c.exit_share[g] * c.exit_device_ms[g] * c.exit_device_ms[g];
    if (g >= device_exits) c.offload_share += c.exit_share[g];
  }
  // A split past the last layer offloads nothing: "offload" is the local finish.
  if (split >= static_cast<int>(in.layer_cost.size())) c.offload_share = 0;
  c.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  return c;
}

std::vector<ExitConfig> ParetoFront(std::vector<ExitConfig> configs) {
  std::vector<ExitConfig> front;
  for (size_t i = 0; i < configs.size(); ++i) {
    bool keep = true;
    for (size_t j = 0; j < configs.size() && keep; ++j) {
      if (j == i) continue;
      if (Dominates(configs[j], configs[i])) keep = false;
      if (j < i && Same(configs[j], configs[i])) keep = false;
    }
    if (keep) front.push_back(configs[i]);
  }
  std::stable_sort(front.begin(), front.end(), [](const ExitConfig& a, const ExitConfig& b) {
    if (std::abs(a.accuracy - b.accuracy) > kEps) return a.accuracy > b.accuracy;
    return a.device_ms < b.device_ms;
  });
  return front;
}

absl::StatusOr<std::vector<ExitConfig>> SweepConfigs(const ConfigSweepInput& in, const ConfigSweepOptions& o) {
  if (auto s = Validate(in); !s.ok()) return s;
  const int num_layers = static_cast<int>(in.layer_cost.size());
  const size_t g_count = in.exit_layers.size();
  if (o.splits.empty()) return absl::InvalidArgumentError("configuration sweep: no split to sweep");
  if (o.step <= 0 || o.max_drop < 0 || o.quantiles < 1) {
    return absl::InvalidArgumentError("configuration sweep: step must be > 0, max_drop >= 0, quantiles >= 1");
  }
  // Candidate thresholds per early exit: quantiles of its confidences, plus disabled.
  std::vector<std::vector<float>> candidates(g_count);
  for (size_t g = 0; g + 1 < g_count; ++g) {
    candidates[g] = ThresholdCandidates(in.data, g, o.quantiles, 16.0 / o.quantiles);
  }
  std::vector<ExitConfig> all;
  for (int split : o.splits) {
    if (split < 1 || split > num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("configuration sweep: split ", split, " is out of range [1, ",
                                                     num_layers, "]"));
    }
    std::vector<size_t> device_exits;
    for (size_t g = 0; g + 1 < g_count; ++g) {
      if (in.exit_layers[g] < split) device_exits.push_back(g);
    }
    std::vector<float> t(g_count, -1.0f);
    ExitConfig best = EvaluateConfig(in, split, t);
    const double top = best.accuracy;
    all.push_back(best);
    const int steps = static_cast<int>(std::floor(o.max_drop / o.step + 1e-9));
    for (int k = 1; k <= steps && !device_exits.empty(); ++k) {
      const double floor = top - k * o.step;
      for (int pass = 0; pass < 8; ++pass) {
        bool improved = false;
        for (size_t g : device_exits) {
          for (float v : candidates[g]) {
            std::vector<float> trial = best.thresholds;
            trial[g] = v;
            ExitConfig r = EvaluateConfig(in, split, trial);
            if (r.accuracy + kEps >= floor &&
                (r.device_ms < best.device_ms - kEps ||
                 (std::abs(r.device_ms - best.device_ms) <= kEps && r.accuracy > best.accuracy + kEps))) {
              best = std::move(r);
              improved = true;
            }
          }
        }
        if (!improved) break;
      }
      all.push_back(best);
    }
  }
  return ParetoFront(std::move(all));
}

std::string ConfigSetToJson(const ConfigSet& set) {
  nlohmann::json configs = nlohmann::json::array();
  for (const ExitConfig& c : set.configs) {
    configs.push_back({{"split", c.split},
                       {"thresholds", c.thresholds},
                       {"accuracy", c.accuracy},
                       {"device_ms", c.device_ms},
                       {"device_ms_m2", c.device_ms_m2},
                       {"offload_share", c.offload_share},
                       {"exit_share", c.exit_share},
                       {"exit_device_ms", c.exit_device_ms}});
  }
  nlohmann::json j = {{"format", "eenn-configs/1"},
                      {"model_name", set.model_name},
                      {"model_version", set.model_version},
                      {"weights_sha256", set.weights_sha256},
                      {"exit_layers", set.exit_layers},
                      {"bundle_thresholds", set.bundle_thresholds},
                      {"final_exit_accuracy", set.final_exit_accuracy},
                      {"configs", configs}};
  return j.dump(2) + "\n";
}

absl::StatusOr<ConfigSet> ConfigSetFromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("configs.json is not a JSON object");
  ConfigSet set;
  try {
    if (j.at("format").get<std::string>() != "eenn-configs/1") {
      return absl::InvalidArgumentError(absl::StrCat("configs.json format '", j.at("format").get<std::string>(),
                                                     "' is not eenn-configs/1"));
    }
    set.model_name = j.at("model_name").get<std::string>();
    set.model_version = j.at("model_version").get<std::string>();
    set.weights_sha256 = j.at("weights_sha256").get<std::string>();
    set.exit_layers = j.at("exit_layers").get<std::vector<int>>();
    set.bundle_thresholds = j.at("bundle_thresholds").get<std::vector<float>>();
    set.final_exit_accuracy = j.at("final_exit_accuracy").get<double>();
    for (const auto& e : j.at("configs")) {
      ExitConfig c;
      c.split = e.at("split").get<int>();
      c.thresholds = e.at("thresholds").get<std::vector<float>>();
      c.accuracy = e.at("accuracy").get<double>();
      c.device_ms = e.at("device_ms").get<double>();
      c.device_ms_m2 = e.at("device_ms_m2").get<double>();
      c.offload_share = e.at("offload_share").get<double>();
      c.exit_share = e.at("exit_share").get<std::vector<double>>();
      c.exit_device_ms = e.at("exit_device_ms").get<std::vector<double>>();
      set.configs.push_back(std::move(c));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("configs.json: ", e.what()));
  }
  const size_t g_count = set.exit_layers.size();
  if (g_count == 0 || set.bundle_thresholds.size() != g_count || set.configs.empty()) {
    return absl::InvalidArgumentError("configs.json: no exits, bundle thresholds that do not match them, or no configs");
  }
  for (size_t i = 0; i < set.configs.size(); ++i) {
    const ExitConfig& c = set.configs[i];
    double share = 0;
    for (double s : c.exit_share) share += s;
    if (c.thresholds.size() != g_count || c.exit_share.size() != g_count || c.exit_device_ms.size() != g_count ||
        c.split < 1 || c.split > set.exit_layers.back() + 1 || !(c.device_ms >= 0) ||
        !(c.offload_share >= 0 && c.offload_share <= 1 + 1e-9) || std::abs(share - 1) > 1e-6) {
      return absl::InvalidArgumentError(absl::StrCat("configs.json: config ", i, " is inconsistent (", g_count,
                                                     " exits, split in [1, ", set.exit_layers.back() + 1,
                                                     "], exit shares summing to 1)"));
    }
    if (i > 0 && c.accuracy > set.configs[i - 1].accuracy + kEps) {
      return absl::InvalidArgumentError("configs.json: configs are not ordered most accurate first");
    }
  }
  return set;
}

absl::StatusOr<ConfigSet> ReadConfigSetFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot read configurations '", path, "'"));
  std::stringstream ss;
  ss << f.rdbuf();
  auto set = ConfigSetFromJson(ss.str());
  if (!set.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", set.status().message()));
  return set;
}

absl::StatusOr<ConfigSet> ReadConfigSet(const std::string& path, const std::string& model_name,
                                        const std::string& model_version, const std::string& weights_sha256,
                                        const std::vector<int>& exit_layers) {
  auto set = ReadConfigSetFile(path);
  if (!set.ok()) return set.status();
  if (set->model_name != model_name || set->model_version != model_version) {
    return absl::FailedPreconditionError(absl::StrCat("configurations '", path, "' were made for model '",
                                                      set->model_name, "' version '", set->model_version,
                                                      "', not '", model_name, "' version '", model_version, "'"));
  }
  if (set->weights_sha256 != weights_sha256) {
    return absl::FailedPreconditionError(absl::StrCat("configurations '", path, "' were made for weights ",
                                                      set->weights_sha256, ", not ", weights_sha256,
                                                      ": recalibrate (eenn-calibrate --configs)"));
  }
  if (set->exit_layers != exit_layers) {
    return absl::FailedPreconditionError(absl::StrCat("configurations '", path, "' have exits [",
                                                      absl::StrJoin(set->exit_layers, ","), "], the model [",
                                                      absl::StrJoin(exit_layers, ","), "]"));
  }
  return set;
}

absl::Status WriteConfigSet(const std::string& path, const ConfigSet& set) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << ConfigSetToJson(set);
    if (!f) return absl::InternalError(absl::StrCat("cannot write '", tmp, "'"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename '", tmp, "' to '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace eenn::common
