#include "common/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <opencv2/imgproc.hpp>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/image.h"

namespace eenn::common {
namespace fs = std::filesystem;

namespace {

// Reads a whole file, transparently gunzipping .gz files.
absl::StatusOr<std::string> ReadMaybeGz(const std::string& path) {
  if (!fs::exists(path)) return absl::NotFoundError(absl::StrCat("missing file '", path, "'"));
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  // gzerror's message lives in the gzFile: copy it before gzclose frees it.
  const std::string error = msg && *msg ? msg : "read error";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) {
    return absl::DataLossError(absl::StrCat("'", path, "': ", error));
  }
  return out;
}

uint32_t BigEndian32(const std::string& s, size_t off) {
  return (uint32_t(uint8_t(s[off])) << 24) | (uint32_t(uint8_t(s[off + 1])) << 16) |
         (uint32_t(uint8_t(s[off + 2])) << 8) | uint32_t(uint8_t(s[off + 3]));
}

absl::StatusOr<ImageDataset> LoadIdx(const DatasetOptions& o) {
  const std::string prefix = o.split == "train" ? "train" : "t10k";
  auto find = [&](const std::string& stem) {
    for (const char* ext : {"", ".gz"}) {
      fs::path p = fs::path(o.dir) / (stem + ext);
      if (fs::exists(p)) return p.string();
    }
    return (fs::path(o.dir) / stem).string();
  };
  const std::string img_path = find(prefix + "-images-idx3-ubyte");
  const std::string lbl_path = find(prefix + "-labels-idx1-ubyte");
  auto imgs = ReadMaybeGz(img_path);
  if (!imgs.ok()) return imgs.status();
  auto lbls = ReadMaybeGz(lbl_path);
  if (!lbls.ok()) return lbls.status();
  if (imgs->size() < 16 || BigEndian32(*imgs, 0) != 0x803) {
    return absl::DataLossError(absl::StrCat("'", img_path, "' is not an idx3 image file"));
  }
  if (lbls->size() < 8 || BigEndian32(*lbls, 0) != 0x801) {
    return absl::DataLossError(absl::StrCat("'", lbl_path, "' is not an idx1 label file"));
  }
  const uint64_t n = BigEndian32(*imgs, 4), h = BigEndian32(*imgs, 8), w = BigEndian32(*imgs, 12);
  if (h == 0 || w == 0 || h > 4096 || w > 4096 || imgs->size() != 16 + n * h * w) {
    return absl::DataLossError(absl::StrCat("'", img_path, "' is truncated or inconsistent (",
                                            n, " images of ", h, "x", w, ", ", imgs->size(),
                                            " bytes)"));
  }
  if (BigEndian32(*lbls, 4) != n || lbls->size() != 8 + n) {
    return absl::DataLossError(
        absl::StrCat("'", lbl_path, "' does not hold ", n, " labels"));
  }
  ImageDataset d;
  d.height = h;
  d.width = w;
  d.channels = 1;
  d.pixels.assign(imgs->begin() + 16, imgs->end());
  for (uint64_t i = 0; i < n; ++i) {
    const int64_t l = uint8_t((*lbls)[8 + i]);
    if (l > 9) return absl::DataLossError(absl::StrCat("'", lbl_path, "': label ", l, " > 9"));
    d.labels.push_back(l);
  }
  for (int c = 0; c < 10; ++c) d.class_names.push_back(std::to_string(c));
  if (fs::path(o.dir).string().find("fashion") != std::string::npos) {
    d.class_names = {"t-shirt", "trouser", "pullover", "dress", "coat",
                     "sandal",  "shirt",   "sneaker",  "bag",   "ankle-boot"};
  }
  return d;
}

absl::StatusOr<ImageDataset> LoadCifarBinary(const DatasetOptions& o) {
  std::vector<std::string> files;
  if (o.split == "train") {
    for (int i = 1; i <= 5; ++i) files.push_back(absl::StrCat("data_batch_", i, ".bin"));
  } else {
    files.push_back("test_batch.bin");
  }
  ImageDataset d;
  d.height = d.width = 32;
  d.channels = 3;
  d.class_names = {"airplane", "automobile", "bird",  "cat",  "deer",
                   "dog",      "frog",       "horse", "ship", "truck"};
  constexpr size_t kRecord = 1 + 3072;
  for (const std::string& name : files) {
    const std::string path = (fs::path(o.dir) / name).string();
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("missing file '", path, "'"));
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.empty() || data.size() % kRecord != 0) {
      return absl::DataLossError(absl::StrCat("'", path, "' is ", data.size(),
                                              " bytes, not a whole number of 3073-byte records"));
    }
    for (size_t r = 0; r < data.size() / kRecord; ++r) {
      const uint8_t* rec = reinterpret_cast<const uint8_t*>(data.data()) + r * kRecord;
      if (rec[0] > 9) {
        return absl::DataLossError(absl::StrCat("'", path, "' record ", r, ": label ",
                                                int(rec[0]), " > 9"));
      }
      d.labels.push_back(rec[0]);
      // Planar R, G, B -> interleaved HWC.
      const size_t base = d.pixels.size();
      d.pixels.resize(base + 3072);
      for (int p = 0; p < 1024; ++p) {
        for (int c = 0; c < 3; ++c) d.pixels[base + p * 3 + c] = rec[1 + c * 1024 + p];
      }
    }
  }
  return d;
}

absl::StatusOr<ImageDataset> LoadFolder(const DatasetOptions& o) {
  fs::path root = fs::path(o.dir) / o.split;
  if (!fs::is_directory(root)) root = fs::path(o.dir);  // a dir that is the split itself
  if (!fs::is_directory(root)) {
    return absl::NotFoundError(absl::StrCat("no such dataset folder '", root.string(), "'"));
  }
  ImageDataset d;
  for (const auto& e : fs::directory_iterator(root)) {
    if (e.is_directory()) d.class_names.push_back(e.path().filename().string());
  }
  std::sort(d.class_names.begin(), d.class_names.end());
  if (d.class_names.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", root.string(), "' has no class folders (<dir>/<class>/<image>)"));
  }
  for (size_t c = 0; c < d.class_names.size(); ++c) {
    auto files = ListImageFiles({(root / d.class_names[c]).string()});
    if (!files.ok()) continue;  // an empty class folder contributes nothing
    for (auto& f : *files) {
      d.sources.push_back(std::move(f));
      d.labels.push_back(static_cast<int64_t>(c));
    }
  }
  if (d.labels.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no images under '", root.string(), "'"));
  }
  int64_t h = o.height, w = o.width;
  if (h <= 0 || w <= 0) {
    auto first = ReadImageFile(d.sources[0]);
    if (!first.ok()) return first.status();
    h = first->rows;
    w = first->cols;
  }
  d.height = h;
  d.width = w;
  d.channels = o.channels == 1 ? 1 : 3;
  const int64_t per = d.image_bytes();
  d.pixels.resize(static_cast<size_t>(per * d.size()));

  int threads = o.threads > 0 ? o.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, threads);
  std::atomic<int64_t> next{0};
  std::vector<absl::Status> errors(threads);
  auto worker = [&](int t) {
    for (int64_t i = next++; i < d.size(); i = next++) {
      auto img = ReadImageFile(d.sources[i]);
      if (!img.ok()) {
        errors[t] = img.status();
        return;
      }
      cv::Mat m = *img;
      if (m.depth() != CV_8U) m.convertTo(m, CV_8U, m.depth() == CV_16U ? 1.0 / 257 : 1.0);
      cv::Mat conv;
      const int ch = m.channels();
      if (d.channels == 3) {
        cv::cvtColor(m, conv, ch == 1 ? cv::COLOR_GRAY2RGB
                                      : ch == 4 ? cv::COLOR_BGRA2RGB : cv::COLOR_BGR2RGB);
      } else {
        if (ch == 1) conv = m;
        else cv::cvtColor(m, conv, ch == 4 ? cv::COLOR_BGRA2GRAY : cv::COLOR_BGR2GRAY);
      }
      if (conv.rows != h || conv.cols != w) {
        if (o.height <= 0) {
          errors[t] = absl::InvalidArgumentError(
              absl::StrCat("'", d.sources[i], "' is ", conv.cols, "x", conv.rows, ", expected ",
                           w, "x", h, " (set a target size to resize)"));
          return;
        }
        cv::resize(conv, conv, cv::Size(static_cast<int>(w), static_cast<int>(h)), 0, 0,
                   cv::INTER_AREA);
      }
      if (!conv.isContinuous()) conv = conv.clone();
      std::memcpy(d.pixels.data() + i * per, conv.data, static_cast<size_t>(per));
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
  for (auto& th : pool) th.join();
  for (const auto& e : errors) {
    if (!e.ok()) return e;
  }
  return d;
}

void Subset(ImageDataset& d, double ratio, uint64_t seed) {
  if (ratio >= 1.0) return;
  const std::vector<int64_t> keep = SubsetIndices(d.labels, ratio, seed);
  ImageDataset out;
  out.height = d.height;
  out.width = d.width;
  out.channels = d.channels;
  out.class_names = d.class_names;
  const int64_t per = d.image_bytes();
  for (int64_t i : keep) {
    out.labels.push_back(d.labels[i]);
    out.pixels.insert(out.pixels.end(), d.image(i), d.image(i) + per);
    if (!d.sources.empty()) out.sources.push_back(d.sources[i]);
  }
  d = std::move(out);
}

// Resizes and converts every image to h x w x c (idx and binary formats come
// in their native size; class folders are already conformed at decode).
void Conform(ImageDataset& d, int64_t h, int64_t w, int64_t c) {
  if (d.height == h && d.width == w && d.channels == c) return;
  std::vector<uint8_t> out(static_cast<size_t>(d.size() * h * w * c));
  const int src_type = d.channels == 1 ? CV_8UC1 : CV_8UC3;
  for (int64_t i = 0; i < d.size(); ++i) {
    cv::Mat src(static_cast<int>(d.height), static_cast<int>(d.width), src_type,
                const_cast<uint8_t*>(d.image(i)));
    cv::Mat conv;
    if (d.channels == c) conv = src;
    else cv::cvtColor(src, conv, c == 3 ? cv::COLOR_GRAY2RGB : cv::COLOR_RGB2GRAY);
    cv::Mat dst(static_cast<int>(h), static_cast<int>(w), c == 1 ? CV_8UC1 : CV_8UC3,
                out.data() + i * h * w * c);
    cv::resize(conv, dst, dst.size(), 0, 0, cv::INTER_LINEAR);
  }
  d.pixels = std::move(out);
  d.height = h;
  d.width = w;
  d.channels = c;
}

}  // namespace

absl::StatusOr<DatasetFormat> ParseDatasetFormat(const std::string& name) {
  if (name == "folder") return DatasetFormat::kFolder;
  if (name == "cifar10-bin" || name == "cifar-bin") return DatasetFormat::kCifarBinary;
  if (name == "idx" || name == "mnist" || name == "fashion-mnist") return DatasetFormat::kIdx;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dataset format '", name, "' (expected folder, cifar10-bin, mnist or fashion-mnist)"));
}

absl::StatusOr<ImageDataset> LoadDataset(const DatasetOptions& o) {
  if (o.split != "train" && o.split != "test") {
    return absl::InvalidArgumentError(absl::StrCat("split must be train or test, got '", o.split, "'"));
  }
  if (!(o.subset_ratio > 0 && o.subset_ratio <= 1)) {
    return absl::InvalidArgumentError("subset ratio must be in (0, 1]");
  }
  absl::StatusOr<ImageDataset> d;
  switch (o.format) {
    case DatasetFormat::kFolder: d = LoadFolder(o); break;
    case DatasetFormat::kCifarBinary: d = LoadCifarBinary(o); break;
    case DatasetFormat::kIdx: d = LoadIdx(o); break;
  }
  if (!d.ok()) return d;
  if (d->size() == 0) return absl::InvalidArgumentError("dataset is empty");
  Subset(*d, o.subset_ratio, o.seed);
  if (o.height > 0 && o.width > 0) Conform(*d, o.height, o.width, o.channels == 1 ? 1 : 3);
  return d;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> SplitIndices(
    const std::vector<int64_t>& labels, double val_ratio, uint64_t seed) {
  std::map<int64_t, std::vector<int64_t>> by_class;
  for (size_t i = 0; i < labels.size(); ++i) by_class[labels[i]].push_back(static_cast<int64_t>(i));
  std::mt19937_64 rng(seed);
  std::vector<int64_t> train, val;
  for (auto& [label, idx] : by_class) {
    std::shuffle(idx.begin(), idx.end(), rng);
    const size_t nv = static_cast<size_t>(std::llround(idx.size() * val_ratio));
    val.insert(val.end(), idx.begin(), idx.begin() + std::min(nv, idx.size()));
    train.insert(train.end(), idx.begin() + std::min(nv, idx.size()), idx.end());
  }
  std::sort(train.begin(), train.end());
  std::sort(val.begin(), val.end());
  return {train, val};
}

double RecordedSubsetRatio(const std::string& metadata_json) {
  const nlohmann::json meta = nlohmann::json::parse(metadata_json, nullptr, false);
  if (!meta.is_object()) return 1.0;
  if (meta.contains("options") && meta["options"].is_object() && meta["options"].contains("subset_ratio") &&
      meta["options"]["subset_ratio"].is_number()) {
    return meta["options"]["subset_ratio"].get<double>();
  }
  if (meta.contains("command") && meta["command"].is_string()) {
    // "--subset_ratio 0.1" or "--subset_ratio=0.1".
    const std::vector<std::string> args = absl::StrSplit(meta["command"].get<std::string>(), ' ', absl::SkipEmpty());
    for (size_t i = 0; i < args.size(); ++i) {
      absl::string_view a = args[i];
      if (!absl::ConsumePrefix(&a, "--subset_ratio")) continue;
      double v = 0;
      if (absl::ConsumePrefix(&a, "=") ? absl::SimpleAtod(a, &v) : (a.empty() && i + 1 < args.size() &&
                                                                    absl::SimpleAtod(args[i + 1], &v))) {
        return v;
      }
    }
  }
  return 1.0;
}

std::vector<int64_t> SubsetIndices(const std::vector<int64_t>& labels, double ratio, uint64_t seed) {
  if (ratio >= 1.0) {
    std::vector<int64_t> all(labels.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
    return all;
  }
  std::vector<int64_t> keep = SplitIndices(labels, 1.0 - ratio, seed).first;
  std::sort(keep.begin(), keep.end());
  return keep;
}

}  // namespace eenn::common
