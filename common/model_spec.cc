#include "common/model_spec.h"

#include "absl/strings/str_cat.h"

namespace eenn::common {

absl::string_view VariantName(Variant v) {
  return v == Variant::kCifar ? "cifar" : "imagenet";
}

absl::StatusOr<Variant> ParseVariant(absl::string_view name) {
  if (name == "cifar") return Variant::kCifar;
  if (name == "imagenet") return Variant::kImagenet;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown variant '", name, "' (expected cifar or imagenet)"));
}

absl::string_view HeadKindName(HeadKind k) {
  return k == HeadKind::kPoolLinear ? "pool_linear" : "conv_mlp";
}

absl::StatusOr<HeadKind> ParseHeadKind(absl::string_view name) {
  if (name == "pool_linear") return HeadKind::kPoolLinear;
  if (name == "conv_mlp") return HeadKind::kConvMlp;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown head kind '", name, "' (expected pool_linear or conv_mlp)"));
}

}  // namespace eenn::common
