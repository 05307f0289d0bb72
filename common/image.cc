#include "common/image.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace eenn::common {

absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, const DecodeLimits& limits) {
  if (bytes.empty()) return absl::InvalidArgumentError("image is empty");
  if (static_cast<int64_t>(bytes.size()) > limits.max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("image is ", bytes.size(), " bytes, over the limit of ", limits.max_bytes));
  }
  cv::Mat decoded;
  try {
    cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8UC1,
                const_cast<char*>(bytes.data()));
    decoded = cv::imdecode(buf, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("image could not be decoded: ", e.what()));
  }
  if (decoded.empty()) {
    return absl::InvalidArgumentError("image could not be decoded (corrupt or unsupported format)");
  }
  if (static_cast<int64_t>(decoded.rows) * decoded.cols > limits.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat("image is ", decoded.cols, "x", decoded.rows,
                                                   ", over the limit of ", limits.max_pixels,
                                                   " pixels"));
  }
  return decoded;
}

absl::StatusOr<cv::Mat> ReadImageFile(const std::string& path, const DecodeLimits& limits) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read image file '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  auto img = DecodeImage(ss.str(), limits);
  if (!img.ok()) {
    return absl::Status(img.status().code(), absl::StrCat(path, ": ", img.status().message()));
  }
  return img;
}

absl::Status PreprocessImage(const cv::Mat& image, const InputSpec& spec, float* out) {
  if (image.empty()) return absl::InvalidArgumentError("image is empty");
  const int c = static_cast<int>(spec.shape[0]);
  const int h = static_cast<int>(spec.shape[1]);
  const int w = static_cast<int>(spec.shape[2]);
  try {
    cv::Mat img = image;
    // Depth: 16-bit PNGs and float images are scaled to 8 bits.
    if (img.depth() == CV_16U) {
      img.convertTo(img, CV_8U, 1.0 / 257.0);
    } else if (img.depth() != CV_8U) {
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported pixel depth ", img.depth(), " (expected 8 or 16 bits)"));
    }
    // Colour: RGB for three channels, grey for one.
    const int ch = img.channels();
    cv::Mat conv;
    if (c == 3) {
      if (ch == 1) cv::cvtColor(img, conv, cv::COLOR_GRAY2RGB);
      else if (ch == 3) cv::cvtColor(img, conv, cv::COLOR_BGR2RGB);
      else if (ch == 4) cv::cvtColor(img, conv, cv::COLOR_BGRA2RGB);
      else return absl::InvalidArgumentError(absl::StrCat("unsupported channel count ", ch));
    } else {
      if (ch == 1) conv = img;
      else if (ch == 3) cv::cvtColor(img, conv, cv::COLOR_BGR2GRAY);
      else if (ch == 4) cv::cvtColor(img, conv, cv::COLOR_BGRA2GRAY);
      else return absl::InvalidArgumentError(absl::StrCat("unsupported channel count ", ch));
    }
    // Geometry.
    cv::Mat sized;
    if (spec.resize == ResizeMode::kStretch) {
      if (conv.cols == w && conv.rows == h) sized = conv;
      else cv::resize(conv, sized, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
    } else {
      const double scale_to = std::floor(std::min(h, w) / spec.crop_pct);
      const double f = scale_to / std::min(conv.rows, conv.cols);
      const int rw = std::max(w, static_cast<int>(std::lround(conv.cols * f)));
      const int rh = std::max(h, static_cast<int>(std::lround(conv.rows * f)));
      cv::Mat resized;
      cv::resize(conv, resized, cv::Size(rw, rh), 0, 0, cv::INTER_LINEAR);
      sized = resized(cv::Rect((rw - w) / 2, (rh - h) / 2, w, h));
    }
    // Normalise into planar CHW.
    for (int k = 0; k < c; ++k) {
      const float scale = 1.0f / (255.0f * spec.std[k]);
      const float shift = -spec.mean[k] / spec.std[k];
      float* plane = out + static_cast<size_t>(k) * h * w;
      for (int y = 0; y < h; ++y) {
        const uint8_t* row = sized.ptr<uint8_t>(y);
        for (int x = 0; x < w; ++x) plane[y * w + x] = row[x * c + k] * scale + shift;
      }
    }
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("image preprocessing failed: ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ListImageFiles(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> found;
      for (fs::recursive_directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->is_regular_file(ec) && HasImageExtension(it->path().string())) {
          found.push_back(it->path().string());
        }
      }
      if (ec) return absl::InternalError(absl::StrCat("listing '", p, "': ", ec.message()));
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(p, ec)) {
      out.push_back(p);
    } else {
      return absl::NotFoundError(absl::StrCat("no such file or folder '", p, "'"));
    }
  }
  if (out.empty()) return absl::InvalidArgumentError("no image files found");
  return out;
}

bool HasImageExtension(const std::string& path) {
  const size_t dot = path.rfind('.');
  if (dot == std::string::npos) return false;
  const std::string ext = absl::AsciiStrToLower(path.substr(dot + 1));
  static const char* kExts[] = {"jpg", "jpeg", "png", "bmp", "webp", "ppm", "pgm", "pnm"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

}  // namespace eenn::common
