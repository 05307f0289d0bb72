#include "tools/bundle_data.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace eenn::tools {

absl::StatusOr<common::ImageDataset> LoadForBundle(const common::Bundle& bundle,
                                                   const std::string& format,
                                                   const std::string& dir,
                                                   const std::string& split) {
  common::DatasetOptions o;
  auto f = common::ParseDatasetFormat(format);
  if (!f.ok()) return f.status();
  o.format = *f;
  o.dir = dir;
  o.split = split;
  o.channels = bundle.manifest.input.shape[0];
  o.height = bundle.manifest.input.shape[1];
  o.width = bundle.manifest.input.shape[2];
  auto d = common::LoadDataset(o);
  if (!d.ok()) return d.status();
  if (d->class_names != bundle.manifest.class_names) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset classes [", absl::StrJoin(d->class_names, ", "), "] differ from the bundle's [",
        absl::StrJoin(bundle.manifest.class_names, ", "), "]"));
  }
  return d;
}

absl::StatusOr<std::vector<int64_t>> ValidationIndices(const common::Bundle& bundle,
                                                       const common::ImageDataset& train,
                                                       double val_ratio, int64_t seed) {
  nlohmann::json meta = nlohmann::json::parse(bundle.manifest.metadata_json, nullptr, false);
  const bool has_options = !meta.is_discarded() && meta.is_object() && meta.contains("options") &&
                           meta["options"].is_object();
  if (val_ratio < 0 || seed < 0) {
    if (!has_options) {
      return absl::InvalidArgumentError(
          "the bundle's metadata does not record how it was trained; pass --val_ratio and --seed");
    }
    if (val_ratio < 0) val_ratio = meta["options"].value("val_ratio", 0.1);
    if (seed < 0) seed = meta["options"].value("seed", 0);
  }
  if (!(val_ratio > 0 && val_ratio < 1)) {
    return absl::InvalidArgumentError("no validation split (val_ratio must be in (0, 1))");
  }
  const double subset_ratio = common::RecordedSubsetRatio(bundle.manifest.metadata_json);
  if (!(subset_ratio > 0 && subset_ratio <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("the bundle records subset_ratio ", subset_ratio,
                                                   ", outside (0, 1]"));
  }
  if (subset_ratio >= 1) {
    return common::SplitIndices(train.labels, val_ratio, static_cast<uint64_t>(seed)).second;
  }
  // The loader's subset (the trainer loaded with subset_ratio and the same seed).
  const std::vector<int64_t> keep = common::SubsetIndices(train.labels, subset_ratio, static_cast<uint64_t>(seed));
  std::vector<int64_t> labels;
  labels.reserve(keep.size());
  for (int64_t i : keep) labels.push_back(train.labels[i]);
  std::vector<int64_t> val = common::SplitIndices(labels, val_ratio, static_cast<uint64_t>(seed)).second;
  for (int64_t& i : val) i = keep[i];
  return val;
}

}  // namespace eenn::tools
