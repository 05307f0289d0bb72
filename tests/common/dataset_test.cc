#include "common/dataset.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <opencv2/imgcodecs.hpp>

#include "common/tensor_batch.h"
#include "tests/test_util.h"

namespace eenn::common {
namespace {

constexpr char kFashion[] = "/usr/share/datasets/fashion-mnist";
const std::string kCifarFolders = EENN_CIFAR10_DIR;

TEST(DatasetTest, FashionMnistIdxGzFiles) {
  DatasetOptions o;
  o.format = DatasetFormat::kIdx;
  o.dir = kFashion;
  o.split = "test";
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 10000);
  EXPECT_EQ(d->height, 28);
  EXPECT_EQ(d->channels, 1);
  std::map<int64_t, int> counts;
  for (int64_t l : d->labels) ++counts[l];
  EXPECT_EQ(counts.size(), 10u);
  for (auto& [l, n] : counts) EXPECT_EQ(n, 1000) << l;
  EXPECT_EQ(d->class_names[0], "t-shirt");
  // Conformed to RGB 32x32 for zoo backbones; a stratified subset.
  o.height = o.width = 32;
  o.channels = 3;
  o.subset_ratio = 0.1;
  auto c = LoadDataset(o);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->size(), 1000);
  EXPECT_EQ(c->channels, 3);
  EXPECT_EQ(c->image_bytes(), 32 * 32 * 3);
}

TEST(DatasetTest, CifarImageFolders) {
  if (!std::filesystem::exists(kCifarFolders)) {
    GTEST_SKIP() << "no CIFAR-10 at " << kCifarFolders << " (cmake -DEENN_CIFAR10_DIR=...)";
  }
  DatasetOptions o;
  o.dir = kCifarFolders;
  o.split = "test";
  o.height = o.width = 32;
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 10000);
  EXPECT_EQ(d->class_names,
            (std::vector<std::string>{"airplane", "automobile", "bird", "cat", "deer", "dog",
                                      "frog", "horse", "ship", "truck"}));
  EXPECT_EQ(d->labels.front(), 0);
  EXPECT_EQ(d->labels.back(), 9);
  // Pixels equal a direct OpenCV decode of the same file (RGB order).
  cv::Mat bgr = cv::imread(d->sources[123]);
  ASSERT_FALSE(bgr.empty());
  const uint8_t* px = d->image(123);
  EXPECT_EQ(px[0], bgr.at<cv::Vec3b>(0, 0)[2]);
  EXPECT_EQ(px[2], bgr.at<cv::Vec3b>(0, 0)[0]);
}

std::string CifarRecord(uint8_t label, uint8_t r, uint8_t g, uint8_t b) {
  std::string rec(1 + 3072, 0);
  rec[0] = static_cast<char>(label);
  std::fill(rec.begin() + 1, rec.begin() + 1025, static_cast<char>(r));
  std::fill(rec.begin() + 1025, rec.begin() + 2049, static_cast<char>(g));
  std::fill(rec.begin() + 2049, rec.end(), static_cast<char>(b));
  return rec;
}

TEST(DatasetTest, CifarBinaryReleaseFormat) {
  testing::TempDir dir;
  testing::WriteAll(dir.Join("test_batch.bin"), CifarRecord(3, 10, 20, 30) + CifarRecord(9, 1, 2, 3));
  DatasetOptions o;
  o.format = DatasetFormat::kCifarBinary;
  o.dir = dir.path();
  o.split = "test";
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->size(), 2);
  EXPECT_EQ(d->labels, (std::vector<int64_t>{3, 9}));
  EXPECT_EQ(d->image(0)[0], 10);  // planar R,G,B became interleaved RGB
  EXPECT_EQ(d->image(0)[1], 20);
  EXPECT_EQ(d->image(0)[2], 30);
  EXPECT_EQ(d->class_names[3], "cat");
}

void ExpectError(const DatasetOptions& o, absl::StatusCode code, const std::string& needle) {
  auto d = LoadDataset(o);
  ASSERT_FALSE(d.ok()) << needle;
  EXPECT_EQ(d.status().code(), code) << d.status();
  EXPECT_NE(d.status().message().find(needle), std::string::npos) << d.status();
}

TEST(DatasetTest, CorruptFilesGiveClearErrors) {
  testing::TempDir dir;
  DatasetOptions o;
  o.dir = dir.path();
  o.split = "test";
  // CIFAR binary: truncated record, bad label, missing file.
  o.format = DatasetFormat::kCifarBinary;
  ExpectError(o, absl::StatusCode::kNotFound, "test_batch.bin");
  testing::WriteAll(dir.Join("test_batch.bin"), CifarRecord(1, 0, 0, 0).substr(0, 2000));
  ExpectError(o, absl::StatusCode::kDataLoss, "3073-byte records");
  testing::WriteAll(dir.Join("test_batch.bin"), CifarRecord(12, 0, 0, 0));
  ExpectError(o, absl::StatusCode::kDataLoss, "label 12");
  // idx: wrong magic, truncated gzip.
  o.format = DatasetFormat::kIdx;
  testing::WriteAll(dir.Join("t10k-images-idx3-ubyte"), std::string(16, '\0'));
  testing::WriteAll(dir.Join("t10k-labels-idx1-ubyte"), std::string(8, '\0'));
  ExpectError(o, absl::StatusCode::kDataLoss, "not an idx3 image file");
  std::filesystem::remove(dir.Join("t10k-images-idx3-ubyte"));
  std::string gz = testing::ReadAll(std::string(kFashion) + "/t10k-images-idx3-ubyte.gz");
  testing::WriteAll(dir.Join("t10k-images-idx3-ubyte.gz"), gz.substr(0, gz.size() / 3));
  auto d = LoadDataset(o);
  EXPECT_FALSE(d.ok());
  EXPECT_TRUE(d.status().code() == absl::StatusCode::kDataLoss) << d.status();
  // Class folders: a broken image is named.
  o.format = DatasetFormat::kFolder;
  std::filesystem::create_directories(dir.Join("test/cat"));
  cv::imwrite(dir.Join("test/cat/ok.png"), cv::Mat(32, 32, CV_8UC3, cv::Scalar(1, 2, 3)));
  testing::WriteAll(dir.Join("test/cat/broken.jpg"), "\xff\xd8\xff garbage");
  ExpectError(o, absl::StatusCode::kInvalidArgument, "broken.jpg");
  o.dir = dir.Join("nowhere");
  ExpectError(o, absl::StatusCode::kNotFound, "nowhere");
}

TEST(DatasetTest, SubsetIndicesNameTheLoadersSubset) {
  DatasetOptions o;
  o.format = DatasetFormat::kIdx;
  o.dir = kFashion;
  o.split = "test";
  o.seed = 7;
  auto full = LoadDataset(o);
  ASSERT_TRUE(full.ok()) << full.status();
  o.subset_ratio = 0.05;
  auto sub = LoadDataset(o);
  ASSERT_TRUE(sub.ok()) << sub.status();
  const std::vector<int64_t> keep = SubsetIndices(full->labels, 0.05, 7);
  ASSERT_EQ(static_cast<int64_t>(keep.size()), sub->size());
  EXPECT_TRUE(std::is_sorted(keep.begin(), keep.end()));
  for (int64_t k = 0; k < sub->size(); ++k) {
    ASSERT_EQ(sub->labels[k], full->labels[keep[k]]) << k;
    ASSERT_EQ(std::memcmp(sub->image(k), full->image(keep[k]), sub->image_bytes()), 0) << k;
  }
  EXPECT_NE(SubsetIndices(full->labels, 0.05, 8), keep);
  EXPECT_EQ(SubsetIndices(full->labels, 1.0, 7).size(), full->labels.size());
}

TEST(DatasetTest, RecordedSubsetRatio) {
  EXPECT_EQ(RecordedSubsetRatio(R"({"options": {"subset_ratio": 0.05, "seed": 1}})"), 0.05);
  // Metadata from before the option was recorded: the command line says it.
  EXPECT_EQ(RecordedSubsetRatio(R"({"options": {"seed": 1}, "command": "eenn-train --subset_ratio 0.1 --seed 1"})"),
            0.1);
  EXPECT_EQ(RecordedSubsetRatio(R"({"command": "eenn-train --epochs 3 --subset_ratio=0.25"})"), 0.25);
  EXPECT_EQ(RecordedSubsetRatio(R"({"options": {"seed": 1}, "command": "eenn-train --seed 1"})"), 1.0);
  EXPECT_EQ(RecordedSubsetRatio(R"({"command": "eenn-train --subset_ratio"})"), 1.0);
  EXPECT_EQ(RecordedSubsetRatio("{}"), 1.0);
  EXPECT_EQ(RecordedSubsetRatio("not json"), 1.0);
}

TEST(DatasetTest, StratifiedSplitIsDeterministicAndDisjoint) {
  std::vector<int64_t> labels;
  for (int i = 0; i < 1000; ++i) labels.push_back(i % 10);
  auto [train, val] = SplitIndices(labels, 0.1, 5);
  EXPECT_EQ(val.size(), 100u);
  EXPECT_EQ(train.size(), 900u);
  std::map<int64_t, int> per_class;
  for (int64_t i : val) ++per_class[labels[i]];
  for (auto& [c, n] : per_class) EXPECT_EQ(n, 10);
  std::vector<int64_t> all = train;
  all.insert(all.end(), val.begin(), val.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::unique(all.begin(), all.end()), all.end());
  EXPECT_EQ(SplitIndices(labels, 0.1, 5).second, val);
  EXPECT_NE(SplitIndices(labels, 0.1, 6).second, val);
}

TEST(TensorBatchTest, NormalisesAndAugments) {
  ImageDataset d;
  d.height = d.width = 4;
  d.channels = 3;
  d.labels = {1};
  d.class_names = {"a", "b"};
  for (int i = 0; i < 16; ++i) {
    d.pixels.push_back(static_cast<uint8_t>(i));  // R increases along the row
    d.pixels.push_back(255);
    d.pixels.push_back(0);
  }
  InputSpec in;
  in.shape = {3, 4, 4};
  std::mt19937_64 rng(1);
  auto [x, y] = MakeBatch(d, {0}, in, {}, rng);
  EXPECT_EQ(y[0].item<int64_t>(), 1);
  EXPECT_FLOAT_EQ(x[0][0][0][3].item<float>(), 3 / 255.0f);
  EXPECT_FLOAT_EQ(x[0][1][2][2].item<float>(), 1.0f);
  // Flip only: column 0 comes from column 3.
  bool flipped = false;
  for (int t = 0; t < 20 && !flipped; ++t) {
    auto [f, l] = MakeBatch(d, {0}, in, Augment{0, true}, rng);
    flipped = std::abs(f[0][0][0][0].item<float>() - 3 / 255.0f) < 1e-6f;
  }
  EXPECT_TRUE(flipped);
  // Padding crop: pixels shifted in from outside are zero before normalisation.
  bool padded = false;
  for (int t = 0; t < 50 && !padded; ++t) {
    auto [p, l] = MakeBatch(d, {0}, in, Augment{2, false}, rng);
    padded = p[0][1].min().item<float>() == 0.0f;
  }
  EXPECT_TRUE(padded);
  in.shape = {3, 8, 8};
  EXPECT_FALSE(CheckDatasetFitsInput(d, in).ok());
}

}  // namespace
}  // namespace eenn::common
