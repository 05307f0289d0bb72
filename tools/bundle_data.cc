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
  if (val_ratio < 0 || seed < 0) {
    if (meta.is_discarded() || !meta.contains("options")) {
      return absl::InvalidArgumentError(
          "the bundle's metadata does not record how it was trained; pass --val_ratio and --seed");
    }
    if (val_ratio < 0) val_ratio = meta["options"].value("val_ratio", 0.1);
    if (seed < 0) seed = meta["options"].value("seed", 0);
  }
  if (!(val_ratio > 0 && val_ratio < 1)) {
    return absl::InvalidArgumentError("no validation split (val_ratio must be in (0, 1))");
  }
  return common::SplitIndices(train.labels, val_ratio, static_cast<uint64_t>(seed)).second;
}

}  // namespace eenn::tools
