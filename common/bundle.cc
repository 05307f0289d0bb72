#include "common/bundle.h"

#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fast_forward.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace eenn::common {
namespace fs = std::filesystem;

namespace {

absl::Status WithDir(const absl::Status& s, const std::string& dir) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("bundle '", dir, "': ", s.message()));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("missing file '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading '", path, "'"));
  return ss.str();
}

absl::Status WriteFileAtomically(const fs::path& path, const std::string& data) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", tmp.string(), "'"));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat("short write to '", tmp.string(), "'"));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename to '", path.string(), "': ", ec.message()));
  return absl::OkStatus();
}

std::string ShapeStr(c10::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// Copies `loaded` into the model's tensors, strictly.
absl::Status LoadStateDict(const EarlyExitNet& model, const c10::IValue& loaded) {
  if (!loaded.isGenericDict()) {
    return absl::FailedPreconditionError("weights file does not hold a name -> tensor dictionary");
  }
  std::map<std::string, at::Tensor> tensors;
  for (const auto& item : loaded.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor()) {
      return absl::FailedPreconditionError("weights dictionary must map names to tensors");
    }
    tensors.emplace(item.key().toStringRef(), item.value().toTensor());
  }
  std::vector<std::pair<std::string, torch::Tensor>> targets = model.StateDict();
  std::vector<std::pair<torch::Tensor, at::Tensor>> copies;  // (model tensor, bundle tensor)
  std::vector<std::string> missing, mismatched;
  for (auto& [name, target] : targets) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
      continue;
    }
    if (!it->second.sizes().equals(target.sizes()) ||
        it->second.scalar_type() != target.scalar_type()) {
      mismatched.push_back(absl::StrCat(name, " (bundle ", ShapeStr(it->second.sizes()), " ",
                                        c10::toString(it->second.scalar_type()), ", model ",
                                        ShapeStr(target.sizes()), " ",
                                        c10::toString(target.scalar_type()), ")"));
    } else {
      copies.emplace_back(target, it->second);
    }
    tensors.erase(it);
  }
  auto head = [](const std::vector<std::string>& v) {
    std::vector<std::string> h(v.begin(), v.begin() + std::min<size_t>(v.size(), 5));
    return absl::StrCat(absl::StrJoin(h, ", "), v.size() > 5 ? ", ..." : "");
  };
  if (!missing.empty() || !mismatched.empty() || !tensors.empty()) {
    std::vector<std::string> unexpected;
    for (const auto& [n, t] : tensors) unexpected.push_back(n);
    std::string msg = "weights do not fit the architecture:";
    if (!missing.empty()) absl::StrAppend(&msg, " ", missing.size(), " missing (", head(missing), ");");
    if (!mismatched.empty()) {
      absl::StrAppend(&msg, " ", mismatched.size(), " mis-shaped (", head(mismatched), ");");
    }
    if (!unexpected.empty()) {
      absl::StrAppend(&msg, " ", unexpected.size(), " unexpected (", head(unexpected), ");");
    }
    return absl::FailedPreconditionError(msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, source] : copies) target.copy_(source);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Bundle> LoadBundle(const std::string& dir) {
  Bundle b;
  b.dir = dir;
  EENN_ASSIGN_OR_RETURN(b.manifest, ReadManifest(dir));
  const BundleManifest& m = b.manifest;

  const std::string weights_path = (fs::path(dir) / m.weights_file).string();
  auto bytes = ReadFile(weights_path);
  if (!bytes.ok()) return WithDir(bytes.status(), dir);
  const std::string actual = Sha256Hex(*bytes);
  if (actual != m.weights_sha256) {
    return WithDir(absl::DataLossError(absl::StrCat("checksum mismatch for '", m.weights_file,
                                                    "': manifest says ", m.weights_sha256,
                                                    ", file has ", actual)),
                   dir);
  }

  auto model = EarlyExitNet::Create(m.spec);
  if (!model.ok()) return WithDir(model.status(), dir);
  b.model = *std::move(model);
  if (b.model->exit_layers() != m.spec.exit_layers) {
    return WithDir(absl::InvalidArgumentError(absl::StrCat(
                       "exits.layers must be ascending layers of '", m.spec.architecture,
                       "' ending with its final layer ", b.model->num_layers() - 1, ", got [",
                       absl::StrJoin(m.spec.exit_layers, ", "), "]")),
                   dir);
  }
  if (b.model->input_shape() != m.input.shape) {
    return WithDir(absl::InvalidArgumentError(absl::StrCat(
                       "input.shape [", absl::StrJoin(m.input.shape, ", "), "] does not match '",
                       m.spec.architecture, "' (", VariantName(m.spec.variant), "): [",
                       absl::StrJoin(b.model->input_shape(), ", "), "]")),
                   dir);
  }
  try {
    std::vector<char> data(bytes->begin(), bytes->end());
    c10::IValue loaded = torch::pickle_load(data);
    EENN_RETURN_IF_ERROR(WithDir(LoadStateDict(*b.model, loaded), dir));
  } catch (const c10::Error& e) {
    return WithDir(absl::DataLossError(absl::StrCat("cannot read weights '", m.weights_file,
                                                    "': ", e.what_without_backtrace())),
                   dir);
  }
  b.model->eval();
  if (OneDnnByDefault()) {
    if (absl::Status s = b.model->SetOneDnn(true); !s.ok()) {
      std::cerr << "eenn: bundle " << dir << " runs on the dense path: " << s.message() << "\n";
    }
  }
  EENN_ASSIGN_OR_RETURN(ConfidenceFunction conf, ParseConfidence(m.confidence));
  b.policy = ExitPolicy{m.thresholds, conf};
  return b;
}

absl::Status SaveBundle(const std::string& dir, BundleManifest manifest,
                        const EarlyExitNet& model) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create '", dir, "': ", ec.message()));
  manifest.spec = model.spec();
  if (manifest.thresholds.size() != model.exit_layers().size()) {
    return absl::InvalidArgumentError(absl::StrCat("manifest has ", manifest.thresholds.size(),
                                                   " thresholds for ", model.num_exits(), " exits"));
  }
  std::string data;
  try {
    c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
    for (const auto& [name, t] : model.StateDict()) dict.insert(name, t.detach().cpu().contiguous());
    std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
    data.assign(bytes.begin(), bytes.end());
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("serialising weights: ", e.what_without_backtrace()));
  }
  manifest.weights_sha256 = Sha256Hex(data);
  EENN_RETURN_IF_ERROR(WriteFileAtomically(fs::path(dir) / manifest.weights_file, data));
  // Validate what we are about to write, so a bundle we save always loads.
  const std::string text = SerializeManifest(manifest);
  auto parsed = ParseManifest(text);
  if (!parsed.ok()) return parsed.status();
  return WriteFileAtomically(fs::path(dir) / kManifestFile, text);
}

BundleManifest DefaultManifest(const EarlyExitNet& model, const std::string& name,
                               const std::string& version) {
  BundleManifest m;
  m.model_name = name;
  m.model_version = version;
  m.spec = model.spec();
  for (int64_t c = 0; c < model.num_classes(); ++c) m.class_names.push_back(absl::StrCat("class_", c));
  m.input.shape = model.input_shape();
  if (model.spec().variant == Variant::kCifar) {
    m.input.mean = {0.4914f, 0.4822f, 0.4465f};
    m.input.std = {0.2470f, 0.2435f, 0.2616f};
  } else {
    m.input.mean = {0.485f, 0.456f, 0.406f};
    m.input.std = {0.229f, 0.224f, 0.225f};
    m.input.resize = ResizeMode::kCenterCrop;
  }
  if (m.input.shape[0] == 1) {
    m.input.mean = {0.5f, 0.f, 0.f};
    m.input.std = {0.5f, 1.f, 1.f};
  }
  m.thresholds.assign(model.num_exits(), 0.5f);
  m.thresholds.back() = 0.0f;
  return m;
}

ServedModel Describe(const Bundle& bundle) {
  ServedModel m;
  m.name = bundle.manifest.model_name;
  m.version = bundle.manifest.model_version;
  m.architecture = bundle.manifest.spec.architecture;
  m.weights_sha256 = bundle.manifest.weights_sha256;
  m.num_layers = bundle.model->num_layers();
  m.exit_layers = bundle.model->exit_layers();
  m.thresholds = bundle.policy.thresholds;
  m.class_names = bundle.manifest.class_names;
  m.input_shape = bundle.model->input_shape();
  for (int k = 0; k <= m.num_layers; ++k) m.layer_input_shapes.push_back(bundle.model->LayerInputShape(k));
  return m;
}

}  // namespace eenn::common
