// Labelled image datasets held in memory as decoded 8-bit pixels, for the
// trainer, the evaluator and the calibration step. Images are decoded once at
// load (in parallel) and never again; batches are cut from memory.
//
// Readers:
//   * class folders: <dir>/<class>/<image> (JPEG/PNG/... through OpenCV); the
//     class names are the sorted folder names (or a given list);
//   * the CIFAR-10 binary release: data_batch_1..5.bin / test_batch.bin;
//   * MNIST / Fashion-MNIST idx files (optionally gzip-compressed), as
//     installed by Debian's dataset-fashion-mnist.
// Torch-free; tensor_batch.h turns indices into normalised batch tensors.
#ifndef EENN_COMMON_DATASET_H_
#define EENN_COMMON_DATASET_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace eenn::common {

struct ImageDataset {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;            // 1 (grey) or 3 (RGB)
  std::vector<uint8_t> pixels;     // N * H * W * C, HWC per image, RGB order
  std::vector<int64_t> labels;     // N labels in [0, class_names.size())
  std::vector<std::string> class_names;
  std::vector<std::string> sources;  // file of each image (class folders only)

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t image_bytes() const { return height * width * channels; }
  const uint8_t* image(int64_t i) const { return pixels.data() + i * image_bytes(); }
};

enum class DatasetFormat { kFolder, kCifarBinary, kIdx };

absl::StatusOr<DatasetFormat> ParseDatasetFormat(const std::string& name);

struct DatasetOptions {
  DatasetFormat format = DatasetFormat::kFolder;
  std::string dir;            // dataset root
  std::string split = "train";  // "train" or "test"
  // Every image is resized (stretched) and converted to this size and channel
  // count (1 or 3); 0 keeps the native size (class folders: the first image's,
  // refusing others).
  int64_t height = 0, width = 0, channels = 3;
  int threads = 0;            // decoding threads; 0 = all cores
  // Keep only this share of each class (1 = all), chosen with `seed`.
  double subset_ratio = 1.0;
  uint64_t seed = 0;
};

// Loads a split. NotFound for a missing folder or file; InvalidArgument or
// DataLoss (naming the file and what is wrong) for corrupt, truncated or
// inconsistent files, undecodable images, or an empty dataset.
absl::StatusOr<ImageDataset> LoadDataset(const DatasetOptions& options);

// Splits [0, n) into (train, validation) index lists, stratified by label:
// `val_ratio` of every class goes to validation. Deterministic in `seed`.
std::pair<std::vector<int64_t>, std::vector<int64_t>> SplitIndices(
    const std::vector<int64_t>& labels, double val_ratio, uint64_t seed);

// The samples LoadDataset keeps with `subset_ratio` (< 1) and `seed`: a stratified
// `ratio` of every class, in ascending order (the subset's sample k is the full
// split's sample SubsetIndices(...)[k]). All of [0, n) for ratio >= 1.
std::vector<int64_t> SubsetIndices(const std::vector<int64_t>& labels, double ratio, uint64_t seed);

// The subset ratio that training metadata (a bundle's metadata or a trainer
// checkpoint's state, as JSON) records: options.subset_ratio; for metadata
// written before that was recorded, the --subset_ratio of its "command" line;
// 1 when neither names one.
double RecordedSubsetRatio(const std::string& metadata_json);

}  // namespace eenn::common

#endif  // EENN_COMMON_DATASET_H_
