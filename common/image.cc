#include "common/image.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace eenn::common {

namespace {

uint32_t Be16(const unsigned char* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t Be32(const unsigned char* p) { return (Be16(p) << 16) | Be16(p + 2); }
uint32_t Le16(const unsigned char* p) { return (uint32_t{p[1]} << 8) | p[0]; }
uint32_t Le24(const unsigned char* p) { return Le16(p) | (uint32_t{p[2]} << 16); }
uint32_t Le32(const unsigned char* p) { return Le16(p) | (Le16(p + 2) << 16); }

absl::Status Truncated(absl::string_view format) {
  return absl::InvalidArgumentError(absl::StrCat(format, " header is truncated"));
}

// JPEG: segments from SOI up to the first start-of-frame marker, which holds
// the dimensions. The entropy-coded data after SOS never contains FF D9 (0xFF
// is byte-stuffed there), so a missing end-of-image marker after the last SOS
// means the file was cut short.
absl::StatusOr<ImageHeader> JpegHeader(absl::string_view bytes) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 2;
  ImageHeader h{"jpeg", 0, 0};
  while (true) {
    while (i < n && b[i] != 0xFF) ++i;  // tolerate fill bytes between segments
    while (i < n && b[i] == 0xFF) ++i;
    if (i >= n) return Truncated("JPEG");
    const unsigned char marker = b[i++];
    if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) continue;  // no length
    if (marker == 0xD9) return absl::InvalidArgumentError("JPEG ends before its frame header");
    if (i + 2 > n) return Truncated("JPEG");
    const size_t len = Be16(b + i);
    if (len < 2 || i + len > n) return Truncated("JPEG");
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (len < 7) return absl::InvalidArgumentError("JPEG frame header is too short");
      h.height = Be16(b + i + 3);
      h.width = Be16(b + i + 5);
      break;
    }
    if (marker == 0xDA) return absl::InvalidArgumentError("JPEG has no frame header before its scan");
    i += len;
  }
  // The last two bytes (after optional zero padding) must be the EOI marker.
  size_t end = n;
  while (end > 2 && b[end - 1] == 0x00) --end;
  if (end < 4 || b[end - 2] != 0xFF || b[end - 1] != 0xD9) {
    return absl::InvalidArgumentError("JPEG is truncated (no end-of-image marker)");
  }
  return h;
}

absl::StatusOr<ImageHeader> PngHeader(absl::string_view bytes) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  // signature (8), IHDR length (4) = 13, "IHDR", width, height.
  if (bytes.size() < 24) return Truncated("PNG");
  if (Be32(b + 8) != 13 || bytes.substr(12, 4) != "IHDR") {
    return absl::InvalidArgumentError("PNG does not start with its IHDR chunk");
  }
  return ImageHeader{"png", Be32(b + 16), Be32(b + 20)};
}

absl::StatusOr<ImageHeader> BmpHeader(absl::string_view bytes) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() < 26) return Truncated("BMP");
  const uint32_t dib = Le32(b + 14);
  if (dib == 12) return ImageHeader{"bmp", Le16(b + 18), Le16(b + 20)};  // OS/2 core header
  const int64_t w = static_cast<int32_t>(Le32(b + 18));
  const int64_t hgt = static_cast<int32_t>(Le32(b + 22));  // negative: stored top-down
  return ImageHeader{"bmp", w, hgt < 0 ? -hgt : hgt};
}

absl::StatusOr<ImageHeader> WebpHeader(absl::string_view bytes) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() < 30) return Truncated("WebP");
  const absl::string_view chunk = bytes.substr(12, 4);
  if (chunk == "VP8 ") {  // lossy: frame tag (3), start code (3), 14-bit width and height
    return ImageHeader{"webp", Le16(b + 26) & 0x3FFF, Le16(b + 28) & 0x3FFF};
  }
  if (chunk == "VP8L") {  // lossless: signature 0x2F, then 14 bits width - 1, 14 bits height - 1
    if (b[20] != 0x2F) return absl::InvalidArgumentError("WebP lossless signature is wrong");
    const uint32_t v = Le32(b + 21);
    return ImageHeader{"webp", (v & 0x3FFF) + 1, ((v >> 14) & 0x3FFF) + 1};
  }
  if (chunk == "VP8X") {  // extended: 24-bit canvas width - 1 and height - 1
    return ImageHeader{"webp", int64_t{Le24(b + 24)} + 1, int64_t{Le24(b + 27)} + 1};
  }
  return absl::InvalidArgumentError("WebP has an unknown first chunk");
}

// PNM (P1-P6): magic, then width and height as decimal text, with comments.
absl::StatusOr<ImageHeader> PnmHeader(absl::string_view bytes) {
  size_t i = 2;
  int64_t dims[2] = {0, 0};
  for (int64_t& d : dims) {
    while (i < bytes.size()) {
      if (bytes[i] == '#') {
        while (i < bytes.size() && bytes[i] != '\n') ++i;
      } else if (absl::ascii_isspace(static_cast<unsigned char>(bytes[i]))) {
        ++i;
      } else {
        break;
      }
    }
    if (i >= bytes.size() || !absl::ascii_isdigit(static_cast<unsigned char>(bytes[i]))) {
      return absl::InvalidArgumentError("PNM header has no valid width and height");
    }
    while (i < bytes.size() && absl::ascii_isdigit(static_cast<unsigned char>(bytes[i]))) {
      d = d * 10 + (bytes[i++] - '0');
      if (d > (int64_t{1} << 31)) return absl::InvalidArgumentError("PNM dimension is too large");
    }
  }
  return ImageHeader{"pnm", dims[0], dims[1]};
}

}  // namespace

absl::StatusOr<ImageHeader> ReadImageHeader(absl::string_view bytes) {
  absl::StatusOr<ImageHeader> h;
  if (absl::StartsWith(bytes, "\xFF\xD8\xFF")) {
    h = JpegHeader(bytes);
  } else if (absl::StartsWith(bytes, "\x89PNG\r\n\x1A\n")) {
    h = PngHeader(bytes);
  } else if (absl::StartsWith(bytes, "BM")) {
    h = BmpHeader(bytes);
  } else if (absl::StartsWith(bytes, "RIFF") && bytes.size() >= 12 && bytes.substr(8, 4) == "WEBP") {
    h = WebpHeader(bytes);
  } else if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] >= '1' && bytes[1] <= '6') {
    h = PnmHeader(bytes);
  } else {
    return absl::InvalidArgumentError("not an image in a supported format (JPEG, PNG, BMP, WebP or PNM)");
  }
  if (!h.ok()) return h;
  if (h->width < 1 || h->height < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(h->format, " header declares an empty image (", h->width, "x", h->height, ")"));
  }
  return h;
}

absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, const DecodeLimits& limits) {
  if (bytes.empty()) return absl::InvalidArgumentError("image is empty");
  if (static_cast<int64_t>(bytes.size()) > limits.max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("image is ", bytes.size(), " bytes, over the limit of ", limits.max_bytes));
  }
  // Refuse a declared size before the decoder allocates for it.
  auto header = ReadImageHeader(bytes);
  if (!header.ok()) return header.status();
  if (header->width > limits.max_pixels / header->height) {
    return absl::InvalidArgumentError(absl::StrCat("image is ", header->width, "x", header->height,
                                                   ", over the limit of ", limits.max_pixels, " pixels"));
  }
  if (static_cast<int64_t>(bytes.size()) > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("image is over 2 GiB");
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
