// The tools' recovery of eenn-train's validation split from a bundle's
// metadata (tools/bundle_data.h), on real files: a run on a subset held its
// validation images out of that subset, never out of images it trained on.
#include "tools/bundle_data.h"

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "common/bundle.h"
#include "common/dataset.h"

namespace eenn::tools {
namespace {

constexpr char kFashion[] = "/usr/share/datasets/fashion-mnist";

common::ImageDataset Load(double subset_ratio, uint64_t seed) {
  common::DatasetOptions o;
  o.format = common::DatasetFormat::kIdx;
  o.dir = kFashion;
  o.split = "test";  // 10,000 images: the same reader as train, loads faster
  o.subset_ratio = subset_ratio;
  o.seed = seed;
  auto d = common::LoadDataset(o);
  EXPECT_TRUE(d.ok()) << d.status();
  return *std::move(d);
}

common::Bundle WithOptions(const nlohmann::json& options) {
  common::Bundle b;
  b.manifest.metadata_json = nlohmann::json{{"options", options}}.dump();
  return b;
}

TEST(ValidationIndicesTest, SubsetRunHoldsOutItsOwnImages) {
  const common::ImageDataset full = Load(1.0, 3);
  const common::ImageDataset sub = Load(0.1, 3);  // what eenn-train --subset_ratio 0.1 --seed 3 trained from
  const auto [trained, held_out] = common::SplitIndices(sub.labels, 0.2, 3);
  auto got = ValidationIndices(WithOptions({{"val_ratio", 0.2}, {"seed", 3}, {"subset_ratio", 0.1}}), full);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), held_out.size());  // 200 of the subset's 1,000, not 2,000 of 10,000
  for (size_t k = 0; k < held_out.size(); ++k) {
    ASSERT_EQ(full.labels[(*got)[k]], sub.labels[held_out[k]]) << k;
    ASSERT_EQ(std::memcmp(full.image((*got)[k]), sub.image(held_out[k]), full.image_bytes()), 0) << k;
  }
  // A bundle from before subset_ratio was recorded: its command line says it.
  common::Bundle older;
  older.manifest.metadata_json =
      nlohmann::json{{"options", {{"val_ratio", 0.2}, {"seed", 3}}},
                     {"command", "eenn-train --subset_ratio 0.1 --val_ratio 0.2 --seed 3"}}
          .dump();
  auto from_command = ValidationIndices(older, full);
  ASSERT_TRUE(from_command.ok()) << from_command.status();
  EXPECT_EQ(*from_command, *got);
  // None of them is an image the run trained on.
  const std::vector<int64_t> keep = common::SubsetIndices(full.labels, 0.1, 3);
  std::set<int64_t> trained_full;
  for (int64_t i : trained) trained_full.insert(keep[i]);
  for (int64_t i : *got) EXPECT_EQ(trained_full.count(i), 0u) << i;
}

TEST(ValidationIndicesTest, WholeSplitAndOverrides) {
  const common::ImageDataset full = Load(1.0, 0);
  auto plain = ValidationIndices(WithOptions({{"val_ratio", 0.1}, {"seed", 5}}), full);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, common::SplitIndices(full.labels, 0.1, 5).second);
  // Explicit --val_ratio / --seed for a bundle without metadata.
  auto bare = ValidationIndices(common::Bundle{}, full, 0.1, 5);
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(*bare, *plain);
  EXPECT_FALSE(ValidationIndices(common::Bundle{}, full).ok());
  EXPECT_FALSE(ValidationIndices(WithOptions({{"val_ratio", 0.1}, {"seed", 5}, {"subset_ratio", 1.5}}), full).ok());
}

}  // namespace
}  // namespace eenn::tools
