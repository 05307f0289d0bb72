#include "common/manifest.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace eenn::common {
namespace {

using nlohmann::json;

// Reads typed fields out of a JSON object, remembering the first error.
class Reader {
 public:
  Reader(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  const json* Get(const char* key, bool required) {
    if (!j_.is_object()) {
      Fail(absl::StrCat(path_, " must be an object"));
      return nullptr;
    }
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (required) Fail(absl::StrCat("missing field '", Path(key), "'"));
      return nullptr;
    }
    return &*it;
  }

  void String(const char* key, std::string* out, bool required = true) {
    const json* v = Get(key, required);
    if (!v) return;
    if (!v->is_string()) return Fail(absl::StrCat("field '", Path(key), "' must be a string"));
    *out = v->get<std::string>();
  }
  template <typename T>
  void Int(const char* key, T* out, bool required = true) {
    const json* v = Get(key, required);
    if (!v) return;
    if (!v->is_number_integer()) {
      return Fail(absl::StrCat("field '", Path(key), "' must be an integer"));
    }
    IntegerAs(*v, key, out);
  }
  void Number(const char* key, double* out, bool required = true) {
    const json* v = Get(key, required);
    if (!v) return;
    if (!v->is_number()) return Fail(absl::StrCat("field '", Path(key), "' must be a number"));
    *out = v->get<double>();
  }
  template <typename T>
  void NumberList(const char* key, std::vector<T>* out, bool required = true) {
    const json* v = Get(key, required);
    if (!v) return;
    if (!v->is_array()) return Fail(absl::StrCat("field '", Path(key), "' must be an array"));
    out->clear();
    for (const json& e : *v) {
      if (!e.is_number() || (std::is_integral_v<T> && !e.is_number_integer())) {
        return Fail(absl::StrCat("field '", Path(key), "' must hold only ",
                                 std::is_integral_v<T> ? "integers" : "numbers"));
      }
      if constexpr (std::is_integral_v<T>) {
        T x{};
        if (!IntegerAs(e, key, &x)) return;
        out->push_back(x);
      } else {
        out->push_back(e.get<T>());
      }
    }
  }
  void StringList(const char* key, std::vector<std::string>* out, bool required = true) {
    const json* v = Get(key, required);
    if (!v) return;
    if (!v->is_array()) return Fail(absl::StrCat("field '", Path(key), "' must be an array"));
    out->clear();
    for (const json& e : *v) {
      if (!e.is_string()) {
        return Fail(absl::StrCat("field '", Path(key), "' must hold only strings"));
      }
      out->push_back(e.get<std::string>());
    }
  }
  Reader Child(const char* key, bool required = true) {
    const json* v = Get(key, required);
    static const json kEmpty = json::object();
    Reader r(v ? *v : kEmpty, Path(key));
    r.status_ = status_;
    if (v && !v->is_object()) r.Fail(absl::StrCat("field '", Path(key), "' must be an object"));
    return r;
  }
  void Merge(const Reader& child) {
    if (status_.ok()) status_ = child.status_;
  }
  void Fail(std::string msg) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(absl::StrCat("manifest: ", msg));
  }
  const absl::Status& status() const { return status_; }
  bool Has(const char* key) const { return j_.is_object() && j_.contains(key); }

 private:
  std::string Path(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  // An integer JSON value (signed or unsigned, up to 64 bits) as T, refusing
  // one that T cannot hold instead of narrowing it (get<T>() would wrap).
  template <typename T>
  bool IntegerAs(const json& v, const char* key, T* out) {
    static_assert(std::is_integral_v<T> && std::is_signed_v<T> && sizeof(T) <= sizeof(int64_t));
    constexpr int64_t kMin = std::numeric_limits<T>::min();
    constexpr int64_t kMax = std::numeric_limits<T>::max();
    bool fits;
    int64_t x = 0;
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      fits = u <= static_cast<uint64_t>(kMax);
      if (fits) x = static_cast<int64_t>(u);
    } else {
      x = v.get<int64_t>();
      fits = x >= kMin && x <= kMax;
    }
    if (!fits) {
      Fail(absl::StrCat("field '", Path(key), "' holds ", v.dump(), ", out of range [", kMin, ", ", kMax,
                        "]"));
      return false;
    }
    *out = static_cast<T>(x);
    return true;
  }
  const json& j_;
  std::string path_;
  absl::Status status_;
};

bool IsLowerHex(const std::string& s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<BundleManifest> ParseManifest(absl::string_view json_text) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("manifest: not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("manifest: top level must be an object");

  BundleManifest m;
  Reader r(j, "");
  r.Int("format_version", &m.format_version);
  if (r.status().ok() && m.format_version != kManifestFormatVersion) {
    r.Fail(absl::StrCat("unsupported format_version ", m.format_version, " (this build reads ",
                        kManifestFormatVersion, ")"));
  }

  Reader model = r.Child("model");
  model.String("name", &m.model_name);
  model.String("version", &m.model_version);
  r.Merge(model);

  Reader arch = r.Child("architecture");
  std::string variant;
  arch.String("name", &m.spec.architecture);
  arch.String("variant", &variant);
  arch.Number("width", &m.spec.width);
  arch.Int("num_classes", &m.spec.num_classes);
  if (arch.Has("head")) {
    Reader head = arch.Child("head");
    std::string kind;
    head.String("kind", &kind);
    head.Int("hidden", &m.spec.head.hidden);
    head.Number("dropout", &m.spec.head.dropout);
    if (head.status().ok()) {
      auto k = ParseHeadKind(kind);
      if (!k.ok()) head.Fail(absl::StrCat("architecture.head.kind: ", k.status().message()));
      else m.spec.head.kind = *k;
    }
    m.spec.head_override = true;
    arch.Merge(head);
  }
  if (arch.Has("exit_pool")) {
    arch.Int("exit_pool", &m.spec.exit_pool);
  }
  if (arch.status().ok()) {
    auto v = ParseVariant(variant);
    if (!v.ok()) arch.Fail(absl::StrCat("architecture.variant: ", v.status().message()));
    else m.spec.variant = *v;
  }
  r.Merge(arch);
  r.StringList("class_names", &m.class_names);

  Reader input = r.Child("input");
  std::vector<double> mean, stdev;
  std::string resize = "stretch";
  input.NumberList("shape", &m.input.shape);
  input.NumberList("mean", &mean);
  input.NumberList("std", &stdev);
  input.String("resize", &resize, /*required=*/false);
  input.Number("crop_pct", &m.input.crop_pct, /*required=*/false);
  r.Merge(input);

  Reader exits = r.Child("exits");
  std::vector<int> layers;
  std::vector<double> thresholds;
  exits.NumberList("layers", &layers);
  exits.NumberList("thresholds", &thresholds);
  exits.String("confidence", &m.confidence);
  r.Merge(exits);

  Reader weights = r.Child("weights");
  weights.String("file", &m.weights_file);
  weights.String("sha256", &m.weights_sha256);
  r.Merge(weights);
  if (j.contains("metadata")) m.metadata_json = j["metadata"].dump();
  if (!r.status().ok()) return r.status();

  // Semantic checks.
  auto fail = [](std::string msg) { return absl::InvalidArgumentError("manifest: " + msg); };
  if (m.model_name.empty() || m.model_version.empty()) {
    return fail("model.name and model.version must not be empty");
  }
  if (m.spec.architecture.empty()) return fail("architecture.name must not be empty");
  if (!(m.spec.width > 0.0 && m.spec.width <= 16.0)) {
    return fail("architecture.width must be in (0, 16]");
  }
  if (m.spec.num_classes < 2 || m.spec.num_classes > 1000000) {
    return fail("architecture.num_classes must be in [2, 1000000]");
  }
  if (m.spec.head_override && (m.spec.head.hidden < 0 || m.spec.head.dropout < 0 ||
                               m.spec.head.dropout >= 1)) {
    return fail("architecture.head needs hidden >= 0 and dropout in [0, 1)");
  }
  if (m.spec.exit_pool < 1 || m.spec.exit_pool > 64) {
    return fail("architecture.exit_pool must be in [1, 64]");
  }
  if (static_cast<int64_t>(m.class_names.size()) != m.spec.num_classes) {
    return fail(absl::StrCat("class_names has ", m.class_names.size(), " entries but num_classes is ",
                             m.spec.num_classes));
  }
  if (m.input.shape.size() != 3 || (m.input.shape[0] != 1 && m.input.shape[0] != 3) ||
      m.input.shape[1] < 1 || m.input.shape[2] < 1 || m.input.shape[1] > 8192 ||
      m.input.shape[2] > 8192) {
    return fail("input.shape must be [C, H, W] with C in {1, 3} and 1 <= H, W <= 8192");
  }
  const size_t c = static_cast<size_t>(m.input.shape[0]);
  if (mean.size() != c || stdev.size() != c) {
    return fail(absl::StrCat("input.mean and input.std need ", c, " values each"));
  }
  for (size_t i = 0; i < c; ++i) {
    if (!std::isfinite(mean[i]) || !std::isfinite(stdev[i]) || stdev[i] <= 0) {
      return fail("input.mean must be finite and input.std finite and positive");
    }
    m.input.mean[i] = static_cast<float>(mean[i]);
    m.input.std[i] = static_cast<float>(stdev[i]);
  }
  if (resize == "stretch") {
    m.input.resize = ResizeMode::kStretch;
  } else if (resize == "center_crop") {
    m.input.resize = ResizeMode::kCenterCrop;
  } else {
    return fail(absl::StrCat("input.resize '", resize, "' is not stretch or center_crop"));
  }
  if (!(m.input.crop_pct > 0 && m.input.crop_pct <= 1)) return fail("input.crop_pct must be in (0, 1]");
  if (layers.empty()) return fail("exits.layers must list at least the final exit");
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || (i > 0 && layers[i] <= layers[i - 1])) {
      return fail("exits.layers must be non-negative and strictly ascending");
    }
  }
  m.spec.exit_layers = layers;
  if (thresholds.size() != layers.size()) {
    return fail(absl::StrCat("exits.thresholds has ", thresholds.size(), " values for ",
                             layers.size(), " exits"));
  }
  for (double t : thresholds) {
    if (!std::isfinite(t) || t > 1.0) return fail("exits.thresholds must be finite and <= 1");
    m.thresholds.push_back(static_cast<float>(t));
  }
  if (m.confidence != "max" && m.confidence != "entropy") {
    return fail(absl::StrCat("exits.confidence '", m.confidence, "' is not max or entropy"));
  }
  if (m.weights_file.empty() || m.weights_file.find('/') != std::string::npos ||
      m.weights_file == "." || m.weights_file == "..") {
    return fail("weights.file must be a plain file name inside the bundle");
  }
  if (m.weights_sha256.size() != 64 || !IsLowerHex(m.weights_sha256)) {
    return fail("weights.sha256 must be 64 lowercase hex digits");
  }
  return m;
}

std::string SerializeManifest(const BundleManifest& m) {
  json j;
  j["format_version"] = m.format_version;
  j["model"] = {{"name", m.model_name}, {"version", m.model_version}};
  json arch = {{"name", m.spec.architecture},
               {"variant", std::string(VariantName(m.spec.variant))},
               {"width", m.spec.width},
               {"num_classes", m.spec.num_classes}};
  if (m.spec.head_override) {
    arch["head"] = {{"kind", std::string(HeadKindName(m.spec.head.kind))},
                    {"hidden", m.spec.head.hidden},
                    {"dropout", m.spec.head.dropout}};
  }
  if (m.spec.exit_pool != 1) arch["exit_pool"] = m.spec.exit_pool;
  j["architecture"] = arch;
  j["class_names"] = m.class_names;
  const size_t c = m.input.shape.empty() ? 0 : static_cast<size_t>(m.input.shape[0]);
  std::vector<double> mean, stdev;
  for (size_t i = 0; i < c && i < 3; ++i) {
    mean.push_back(m.input.mean[i]);
    stdev.push_back(m.input.std[i]);
  }
  j["input"] = {{"shape", m.input.shape},
                {"mean", mean},
                {"std", stdev},
                {"resize", m.input.resize == ResizeMode::kStretch ? "stretch" : "center_crop"},
                {"crop_pct", m.input.crop_pct}};
  std::vector<double> thresholds(m.thresholds.begin(), m.thresholds.end());
  j["exits"] = {{"layers", m.spec.exit_layers},
                {"thresholds", thresholds},
                {"confidence", m.confidence}};
  j["weights"] = {{"file", m.weights_file}, {"sha256", m.weights_sha256}};
  json meta = json::parse(m.metadata_json, nullptr, false);
  j["metadata"] = meta.is_discarded() ? json::object() : meta;
  return j.dump(2) + "\n";
}

absl::StatusOr<BundleManifest> ReadManifest(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / kManifestFile).string();
  auto fail = [&](absl::StatusCode code, absl::string_view msg) {
    return absl::Status(code, absl::StrCat("bundle '", dir, "': ", msg));
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(absl::StatusCode::kNotFound, absl::StrCat("missing file '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return fail(absl::StatusCode::kDataLoss, absl::StrCat("error reading '", path, "'"));
  auto m = ParseManifest(ss.str());
  if (!m.ok()) return fail(m.status().code(), m.status().message());
  return m;
}

}  // namespace eenn::common
