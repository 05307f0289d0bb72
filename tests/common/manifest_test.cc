#include "common/manifest.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace eenn::common {
namespace {

using nlohmann::json;

json Valid() {
  return json::parse(R"({
    "format_version": 1,
    "model": {"name": "cifar10-resnet18", "version": "3"},
    "architecture": {"name": "resnet18", "variant": "cifar", "width": 0.5, "num_classes": 3},
    "class_names": ["a", "b", "c"],
    "input": {"shape": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    "exits": {"layers": [4, 11], "thresholds": [0.9, 0], "confidence": "entropy"},
    "weights": {"file": "weights.pt",
                "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
  })");
}

absl::Status ParseWith(const std::function<void(json&)>& edit) {
  json j = Valid();
  edit(j);
  return ParseManifest(j.dump()).status();
}

void ExpectError(const std::function<void(json&)>& edit, const std::string& needle) {
  absl::Status s = ParseWith(edit);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << needle;
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message() << " lacks " << needle;
}

TEST(ManifestTest, ParsesValidManifest) {
  auto m = ParseManifest(Valid().dump());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->model_name, "cifar10-resnet18");
  EXPECT_EQ(m->model_version, "3");
  EXPECT_EQ(m->spec.architecture, "resnet18");
  EXPECT_EQ(m->spec.variant, Variant::kCifar);
  EXPECT_DOUBLE_EQ(m->spec.width, 0.5);
  EXPECT_EQ(m->spec.exit_layers, (std::vector<int>{4, 11}));
  EXPECT_EQ(m->thresholds, (std::vector<float>{0.9f, 0.0f}));
  EXPECT_EQ(m->confidence, "entropy");
  EXPECT_FALSE(m->spec.head_override);
  EXPECT_EQ(m->spec.exit_pool, 1);  // absent: the reference's global pooling
  EXPECT_EQ(m->input.resize, ResizeMode::kStretch);
}

TEST(ManifestTest, RoundTripsThroughSerialize) {
  json j = Valid();
  j["architecture"]["head"] = {{"kind", "pool_linear"}, {"hidden", 64}, {"dropout", 0.1}};
  j["architecture"]["exit_pool"] = 4;
  j["metadata"] = {{"trained_by", "eenn-train"}};
  auto m = ParseManifest(j.dump());
  ASSERT_TRUE(m.ok()) << m.status();
  auto again = ParseManifest(SerializeManifest(*m));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(SerializeManifest(*m), SerializeManifest(*again));
  EXPECT_TRUE(again->spec.head_override);
  EXPECT_EQ(again->spec.head.hidden, 64);
  EXPECT_EQ(again->spec.exit_pool, 4);
  EXPECT_NE(again->metadata_json.find("eenn-train"), std::string::npos);
}

TEST(ManifestTest, EachBadFieldIsNamed) {
  EXPECT_EQ(ParseManifest("{not json").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseManifest("[1,2]").status().code(), absl::StatusCode::kInvalidArgument);
  ExpectError([](json& j) { j.erase("model"); }, "'model'");
  ExpectError([](json& j) { j["model"].erase("version"); }, "model.version");
  ExpectError([](json& j) { j["architecture"].erase("num_classes"); }, "architecture.num_classes");
  ExpectError([](json& j) { j["architecture"]["num_classes"] = "3"; }, "architecture.num_classes");
  ExpectError([](json& j) { j["architecture"]["variant"] = "mnist"; }, "variant");
  ExpectError([](json& j) { j["architecture"]["width"] = 0; }, "width");
  ExpectError([](json& j) { j["class_names"].push_back("d"); }, "class_names");
  ExpectError([](json& j) { j["architecture"]["exit_pool"] = 0; }, "exit_pool");
  ExpectError([](json& j) { j["architecture"]["exit_pool"] = "2"; }, "exit_pool");
  ExpectError([](json& j) { j["input"]["shape"] = {3, 32}; }, "input.shape");
  ExpectError([](json& j) { j["input"]["std"] = {1, 0, 1}; }, "input.std");
  ExpectError([](json& j) { j["input"]["mean"] = {1, 1}; }, "input.mean");
  ExpectError([](json& j) { j["input"]["resize"] = "fill"; }, "input.resize");
  ExpectError([](json& j) { j["exits"]["layers"] = {11, 4}; }, "ascending");
  ExpectError([](json& j) { j["exits"]["thresholds"] = {0.5}; }, "thresholds");
  ExpectError([](json& j) { j["exits"]["thresholds"] = {1.5, 0}; }, "thresholds");
  ExpectError([](json& j) { j["exits"]["confidence"] = "margin"; }, "confidence");
  ExpectError([](json& j) { j["weights"]["sha256"] = "abc"; }, "sha256");
  ExpectError([](json& j) { j["weights"]["file"] = "../etc/passwd"; }, "weights.file");
  ExpectError([](json& j) { j["format_version"] = 2; }, "format_version");
  ExpectError([](json& j) { j["architecture"]["head"] = {{"kind", "mlp"}, {"hidden", 1}, {"dropout", 0}}; },
              "head.kind");
}

// Integers are read as 64-bit and range-checked against their field, never
// narrowed: 4294967297 (2^32 + 1) as a 32-bit int would read as 1.
TEST(ManifestTest, OutOfRangeIntegersAreRefusedNotNarrowed) {
  const std::string range32 = "out of range [-2147483648, 2147483647]";
  ExpectError([](json& j) { j["format_version"] = 4294967297LL; }, "field 'format_version' holds 4294967297, " + range32);
  ExpectError([](json& j) { j["exits"]["layers"] = {-4294967292LL, 11}; },  // would read as 4
              "field 'exits.layers' holds -4294967292, " + range32);
  ExpectError([](json& j) { j["architecture"]["head"] = {{"kind", "pool_linear"}, {"hidden", 18446744073709551615ULL}, {"dropout", 0}}; },
              "field 'architecture.head.hidden' holds 18446744073709551615, out of range");
  ExpectError([](json& j) { j["exits"]["layers"] = {4, 4294967307LL}; },
              "field 'exits.layers' holds 4294967307, " + range32);
  ExpectError([](json& j) { j["input"]["shape"] = {3, 32, 9223372036854775808ULL}; },
              "field 'input.shape' holds 9223372036854775808, out of range");
  // In range, including unsigned JSON values: accepted as before.
  auto m = ParseManifest([] {
    json j = Valid();
    j["format_version"] = 1u;
    j["exits"]["layers"] = {4u, 11u};
    return j.dump();
  }());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->spec.exit_layers, (std::vector<int>{4, 11}));
}

}  // namespace
}  // namespace eenn::common
