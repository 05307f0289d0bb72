#include "common/profile.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace eenn::common {
namespace {

using json = nlohmann::json;

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

json StatsJson(const TimeStats& s, bool reference) {
  json j = {{"mean", s.mean},         {"std", s.std},         {"var", s.var},
            {"min", s.min},           {"max", s.max},         {"log_mean", s.log_mean},
            {"log_std", s.log_std},   {"log_var", s.log_var}};
  if (!reference) {
    j["n"] = s.n;
    j["p50"] = s.p50;
    j["p90"] = s.p90;
    j["p99"] = s.p99;
  }
  return j;
}

json WireJson(const std::map<std::string, WireCost>& wire) {
  json j = json::object();
  for (const auto& [k, c] : wire) {
    j[k] = {{"bytes", c.bytes}, {"encode_ms", c.encode_ms}, {"decode_ms", c.decode_ms}};
  }
  return j;
}

// Reads with the field path in every error.
class Reader {
 public:
  absl::Status status() const { return status_; }

  const json* Get(const json& j, const char* key, const std::string& where) {
    if (!status_.ok()) return nullptr;
    if (!j.is_object() || !j.contains(key)) {
      status_ = absl::InvalidArgumentError(absl::StrCat("profile: missing ", where, key));
      return nullptr;
    }
    return &j[key];
  }
  double Number(const json& j, const char* key, const std::string& where) {
    const json* v = Get(j, key, where);
    if (!v) return 0;
    if (!v->is_number() || !std::isfinite(v->get<double>())) {
      status_ = absl::InvalidArgumentError(absl::StrCat("profile: ", where, key, " is not a finite number"));
      return 0;
    }
    return v->get<double>();
  }
  std::string String(const json& j, const char* key, const std::string& where) {
    const json* v = Get(j, key, where);
    if (!v) return "";
    if (!v->is_string()) {
      status_ = absl::InvalidArgumentError(absl::StrCat("profile: ", where, key, " is not a string"));
      return "";
    }
    return v->get<std::string>();
  }
  std::vector<int64_t> Shape(const json& j, const char* key, const std::string& where) {
    const json* v = Get(j, key, where);
    std::vector<int64_t> out;
    if (!v) return out;
    if (!v->is_array()) {
      status_ = absl::InvalidArgumentError(absl::StrCat("profile: ", where, key, " is not an array"));
      return out;
    }
    for (const json& d : *v) {
      if (!d.is_number_integer() || d.get<int64_t>() < 1) {
        status_ = absl::InvalidArgumentError(absl::StrCat("profile: ", where, key, " has a bad dimension"));
        return {};
      }
      out.push_back(d.get<int64_t>());
    }
    return out;
  }
  TimeStats Stats(const json& j, const char* key, const std::string& where) {
    TimeStats s;
    const json* v = Get(j, key, where);
    if (!v) return s;
    const std::string w = absl::StrCat(where, key, ".");
    s.n = static_cast<int64_t>(Number(*v, "n", w));
    s.mean = Number(*v, "mean", w);
    s.std = Number(*v, "std", w);
    s.var = Number(*v, "var", w);
    s.min = Number(*v, "min", w);
    s.max = Number(*v, "max", w);
    s.log_mean = Number(*v, "log_mean", w);
    s.log_std = Number(*v, "log_std", w);
    s.log_var = Number(*v, "log_var", w);
    s.p50 = Number(*v, "p50", w);
    s.p90 = Number(*v, "p90", w);
    s.p99 = Number(*v, "p99", w);
    if (status_.ok() && (s.mean < 0 || s.min < 0)) {
      status_ = absl::InvalidArgumentError(absl::StrCat("profile: ", w, " has negative times"));
    }
    return s;
  }
  std::map<std::string, WireCost> Wire(const json& j, const char* key, const std::string& where) {
    std::map<std::string, WireCost> out;
    const json* v = Get(j, key, where);
    if (!v) return out;
    if (!v->is_object()) {
      status_ = absl::InvalidArgumentError(absl::StrCat("profile: ", where, key, " is not an object"));
      return out;
    }
    for (auto it = v->begin(); it != v->end(); ++it) {
      if (!ParseWireKey(it.key()).ok()) {
        status_ = absl::InvalidArgumentError(
            absl::StrCat("profile: ", where, key, " has an unknown wire format '", it.key(), "'"));
        return out;
      }
      const std::string w = absl::StrCat(where, key, ".", it.key(), ".");
      WireCost c;
      c.bytes = Number(*it, "bytes", w);
      c.encode_ms = Number(*it, "encode_ms", w);
      c.decode_ms = Number(*it, "decode_ms", w);
      if (status_.ok() && (c.bytes < 0 || c.encode_ms < 0 || c.decode_ms < 0)) {
        status_ = absl::InvalidArgumentError(absl::StrCat("profile: ", w, " has negative values"));
      }
      out[it.key()] = c;
    }
    return out;
  }

 private:
  absl::Status status_;
};

}  // namespace

TimeStats ComputeTimeStats(std::vector<double> values) {
  TimeStats s;
  s.n = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  const double n = static_cast<double>(values.size());
  double sum = 0, log_sum = 0;
  for (double v : values) {
    sum += v;
    log_sum += std::log(std::max(v, 1e-20));
  }
  s.mean = sum / n;
  s.log_mean = log_sum / n;
  for (double v : values) {
    s.var += (v - s.mean) * (v - s.mean);
    const double lv = std::log(std::max(v, 1e-20)) - s.log_mean;
    s.log_var += lv * lv;
  }
  s.var /= n;
  s.log_var /= n;
  s.std = std::sqrt(s.var);
  s.log_std = std::sqrt(s.log_var);
  std::sort(values.begin(), values.end());
  s.min = values.front();
  s.max = values.back();
  s.p50 = Percentile(values, 0.50);
  s.p90 = Percentile(values, 0.90);
  s.p99 = Percentile(values, 0.99);
  return s;
}

TimeStats ScaleTimeStats(const TimeStats& s, double factor) {
  TimeStats t = s;
  t.mean *= factor;
  t.std *= factor;
  t.var *= factor * factor;
  t.min *= factor;
  t.max *= factor;
  t.p50 *= factor;
  t.p90 *= factor;
  t.p99 *= factor;
  if (s.n > 0) t.log_mean += std::log(factor);  // log_std and log_var are shift-invariant
  return t;
}

std::string WireKey(WireEncoding encoding, WireCompression compression) {
  std::string k(EncodingName(encoding));
  if (compression == WireCompression::kZstd) k += "+zstd";
  return k;
}

absl::StatusOr<std::pair<WireEncoding, WireCompression>> ParseWireKey(const std::string& key) {
  for (WireEncoding e : {WireEncoding::kFp32, WireEncoding::kFp16, WireEncoding::kInt8}) {
    for (WireCompression c : {WireCompression::kNone, WireCompression::kZstd}) {
      if (WireKey(e, c) == key) return std::make_pair(e, c);
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown wire format '", key, "' (fp32, fp16, int8, each optionally with +zstd)"));
}

std::vector<std::string> AllWireKeys() {
  std::vector<std::string> keys;
  for (WireCompression c : {WireCompression::kNone, WireCompression::kZstd}) {
    for (WireEncoding e : {WireEncoding::kFp32, WireEncoding::kFp16, WireEncoding::kInt8}) {
      keys.push_back(WireKey(e, c));
    }
  }
  return keys;
}

absl::StatusOr<WireCost> Profile::SplitWire(int split, const std::string& wire_key) const {
  if (split < 0 || split >= num_layers()) {
    return absl::NotFoundError(absl::StrCat("no tensor is sent at split ", split, " (",
                                            num_layers(), " layers)"));
  }
  const auto& wire = split == 0 ? input_wire : layers[split - 1].wire;
  auto it = wire.find(wire_key);
  if (it == wire.end()) {
    return absl::NotFoundError(absl::StrCat("profile of ", model_name, " on ", host, " has no '",
                                            wire_key, "' cost at split ", split));
  }
  return it->second;
}

std::string ProfileToJson(const Profile& p) {
  constexpr double kSeconds = 1e-3;
  json root;
  // The reference implementation's keys: seconds and bytes.
  root["execution_time"] = StatsJson(ScaleTimeStats(p.eenn_ms, kSeconds), true);
  int64_t model_bytes = 0;
  for (const auto& l : p.layers) model_bytes += l.param_bytes;
  // Raw bytes: the reference's torch.save sizes less their container overhead.
  // The output is the inference result, one float per class.
  root["memory"] = {{"model", model_bytes}, {"output", 4 * p.num_classes}};
  json bt = json::object(), bm = json::object(), gt = json::object();
  for (const auto& l : p.layers) {
    bt[l.key] = StatsJson(ScaleTimeStats(l.ms, kSeconds), true);
    auto it = l.wire.find("fp32");
    bm[l.key] = it == l.wire.end() ? 0.0 : it->second.bytes;
  }
  for (const auto& h : p.heads) gt[h.key] = StatsJson(ScaleTimeStats(h.ms, kSeconds), true);
  root["backbone_execution_time"] = bt;
  root["backbone_output_memory"] = bm;
  root["gate_execution_time"] = gt;
  for (const auto& e : p.exits) {
    root[absl::StrCat("execution_time_gate_", e.exit_index, "_layer_", e.layer)] =
        StatsJson(ScaleTimeStats(e.single_ms, kSeconds), true);
  }

  json e;
  e["format_version"] = 1;
  e["model"] = {{"name", p.model_name}, {"version", p.model_version}, {"architecture", p.architecture}};
  e["host"] = p.host;
  e["threads"] = p.threads;
  e["created"] = p.created;
  e["samples"] = p.samples;
  e["calibration_samples"] = p.calibration_samples;
  e["input_shape"] = p.input_shape;
  e["num_classes"] = p.num_classes;
  e["preprocess_ms"] = StatsJson(p.preprocess_ms, false);
  e["input_wire"] = WireJson(p.input_wire);
  e["full_ms"] = StatsJson(p.full_ms, false);
  e["eenn_ms"] = StatsJson(p.eenn_ms, false);
  json layers = json::array();
  for (const auto& l : p.layers) {
    layers.push_back({{"index", l.index},
                      {"class", l.class_name},
                      {"key", l.key},
                      {"ms", StatsJson(l.ms, false)},
                      {"output_shape", l.output_shape},
                      {"param_bytes", l.param_bytes},
                      {"wire", WireJson(l.wire)}});
  }
  e["layers"] = layers;
  json heads = json::array();
  for (const auto& h : p.heads) {
    heads.push_back({{"exit", h.exit_index}, {"layer", h.layer}, {"key", h.key}, {"ms", StatsJson(h.ms, false)}});
  }
  e["heads"] = heads;
  json exits = json::array();
  for (const auto& x : p.exits) {
    exits.push_back({{"exit", x.exit_index},
                     {"layer", x.layer},
                     {"threshold", x.threshold},
                     {"single_ms", StatsJson(x.single_ms, false)},
                     {"share", x.share},
                     {"accuracy", x.accuracy}});
  }
  e["exits"] = exits;
  root["eenn"] = e;
  return root.dump(4) + "\n";
}

absl::StatusOr<Profile> ProfileFromJson(const std::string& text) {
  json root = json::parse(text, nullptr, false);
  if (root.is_discarded()) return absl::InvalidArgumentError("profile: not valid JSON");
  Reader r;
  Profile p;
  const json* e = r.Get(root, "eenn", "");
  if (!e) return r.status();
  const std::string w = "eenn.";
  const json* version = r.Get(*e, "format_version", w);
  if (version && (!version->is_number_integer() || version->get<int>() != 1)) {
    return absl::InvalidArgumentError("profile: eenn.format_version must be 1");
  }
  if (const json* m = r.Get(*e, "model", w)) {
    p.model_name = r.String(*m, "name", "eenn.model.");
    p.model_version = r.String(*m, "version", "eenn.model.");
    p.architecture = r.String(*m, "architecture", "eenn.model.");
  }
  p.host = r.String(*e, "host", w);
  p.threads = static_cast<int>(r.Number(*e, "threads", w));
  p.created = r.String(*e, "created", w);
  p.samples = static_cast<int64_t>(r.Number(*e, "samples", w));
  p.calibration_samples = static_cast<int64_t>(r.Number(*e, "calibration_samples", w));
  p.input_shape = r.Shape(*e, "input_shape", w);
  p.num_classes = static_cast<int64_t>(r.Number(*e, "num_classes", w));
  p.preprocess_ms = r.Stats(*e, "preprocess_ms", w);
  p.input_wire = r.Wire(*e, "input_wire", w);
  p.full_ms = r.Stats(*e, "full_ms", w);
  p.eenn_ms = r.Stats(*e, "eenn_ms", w);
  const json* layers = r.Get(*e, "layers", w);
  const json* heads = r.Get(*e, "heads", w);
  const json* exits = r.Get(*e, "exits", w);
  if (!r.status().ok()) return r.status();
  if (!layers->is_array() || layers->empty()) return absl::InvalidArgumentError("profile: eenn.layers must be a non-empty array");
  if (!heads->is_array()) return absl::InvalidArgumentError("profile: eenn.heads must be an array");
  if (!exits->is_array() || exits->empty()) return absl::InvalidArgumentError("profile: eenn.exits must be a non-empty array");
  for (size_t i = 0; i < layers->size(); ++i) {
    const json& lj = (*layers)[i];
    const std::string lw = absl::StrCat("eenn.layers[", i, "].");
    LayerProfile l;
    l.index = static_cast<int>(r.Number(lj, "index", lw));
    l.class_name = r.String(lj, "class", lw);
    l.key = r.String(lj, "key", lw);
    l.ms = r.Stats(lj, "ms", lw);
    l.output_shape = r.Shape(lj, "output_shape", lw);
    l.param_bytes = static_cast<int64_t>(r.Number(lj, "param_bytes", lw));
    l.wire = r.Wire(lj, "wire", lw);
    if (!r.status().ok()) return r.status();
    if (l.index != static_cast<int>(i)) {
      return absl::InvalidArgumentError(absl::StrCat("profile: ", lw, "index is ", l.index, ", expected ", i));
    }
    p.layers.push_back(std::move(l));
  }
  const int n = p.num_layers();
  int prev_layer = -1;
  for (size_t g = 0; g < exits->size(); ++g) {
    const json& xj = (*exits)[g];
    const std::string xw = absl::StrCat("eenn.exits[", g, "].");
    ExitProfile x;
    x.exit_index = static_cast<int>(r.Number(xj, "exit", xw));
    x.layer = static_cast<int>(r.Number(xj, "layer", xw));
    x.threshold = static_cast<float>(r.Number(xj, "threshold", xw));
    x.single_ms = r.Stats(xj, "single_ms", xw);
    x.share = r.Number(xj, "share", xw);
    x.accuracy = r.Number(xj, "accuracy", xw);
    if (!r.status().ok()) return r.status();
    if (x.exit_index != static_cast<int>(g) || x.layer <= prev_layer || x.layer >= n) {
      return absl::InvalidArgumentError(absl::StrCat("profile: ", xw, " has exit ", x.exit_index,
                                                     " at layer ", x.layer, " out of order or range"));
    }
    if (!(x.share >= 0 && x.share <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("profile: ", xw, "share must be in [0, 1]"));
    }
    prev_layer = x.layer;
    p.exits.push_back(x);
  }
  if (p.exits.back().layer != n - 1) {
    return absl::InvalidArgumentError("profile: the last exit must sit on the last layer");
  }
  if (heads->size() != p.exits.size()) {
    return absl::InvalidArgumentError(absl::StrCat("profile: eenn.heads has ", heads->size(),
                                                   " entries for ", p.exits.size(), " exits"));
  }
  for (size_t g = 0; g < heads->size(); ++g) {
    const json& hj = (*heads)[g];
    const std::string hw = absl::StrCat("eenn.heads[", g, "].");
    HeadProfile h;
    h.exit_index = static_cast<int>(r.Number(hj, "exit", hw));
    h.layer = static_cast<int>(r.Number(hj, "layer", hw));
    h.key = r.String(hj, "key", hw);
    h.ms = r.Stats(hj, "ms", hw);
    if (!r.status().ok()) return r.status();
    if (h.exit_index != static_cast<int>(g) || h.layer != p.exits[g].layer) {
      return absl::InvalidArgumentError(absl::StrCat("profile: ", hw, " does not match exit ", g));
    }
    p.heads.push_back(std::move(h));
  }
  return p;
}

absl::StatusOr<Profile> ReadProfile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open profile '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<Profile> p = ProfileFromJson(ss.str());
  if (!p.ok()) return absl::Status(p.status().code(), absl::StrCat(path, ": ", p.status().message()));
  return p;
}

}  // namespace eenn::common
