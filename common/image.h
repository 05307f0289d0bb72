// Image decoding and preprocessing with OpenCV: encoded bytes -> normalised
// CHW float pixels, exactly as a bundle's InputSpec prescribes. Torch-free;
// tensor_image.h turns the result into a batch tensor.
//
// Preprocessing: decode (BGR or grey), convert to RGB (or grey for C = 1),
// resize (stretch, or shorter side to size / crop_pct then centre crop,
// bilinear), scale to [0, 1], subtract mean and divide by std per channel.
#ifndef EENN_COMMON_IMAGE_H_
#define EENN_COMMON_IMAGE_H_

#include <opencv2/core.hpp>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "common/manifest.h"

namespace eenn::common {

struct DecodeLimits {
  int64_t max_bytes = 64 << 20;       // refuse larger uploads
  int64_t max_pixels = 64LL << 20;    // refuse larger decoded images (W * H)
};

// What an image's header declares, read without decoding it.
struct ImageHeader {
  std::string format;  // "jpeg", "png", "bmp", "webp" or "pnm"
  int64_t width = 0;
  int64_t height = 0;
};

// Reads the format and dimensions from the first bytes of an image, so that a
// declared size can be refused before any pixel memory is allocated.
// InvalidArgument for an unsupported format (anything but JPEG, PNG, BMP, WebP
// and PNM) or a header that is truncated or inconsistent, naming which.
absl::StatusOr<ImageHeader> ReadImageHeader(absl::string_view bytes);

// Decodes JPEG/PNG/BMP/WebP/PNM bytes. The header is checked first (format,
// declared width x height against limits.max_pixels, a JPEG's end-of-image
// marker), then the pixels are decoded. InvalidArgument for empty, oversized,
// truncated, corrupt or unsupported input.
absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, const DecodeLimits& limits = {});

// Reads and decodes an image file. NotFound when it cannot be read.
absl::StatusOr<cv::Mat> ReadImageFile(const std::string& path, const DecodeLimits& limits = {});

// Writes spec.shape[0] * spec.shape[1] * spec.shape[2] floats (CHW) to `out`.
// InvalidArgument for an empty image or an unsupported pixel format.
absl::Status PreprocessImage(const cv::Mat& image, const InputSpec& spec, float* out);

// Expands files and folders (recursively, sorted) into the image files they
// hold. NotFound for a path that does not exist; InvalidArgument when nothing
// is found.
absl::StatusOr<std::vector<std::string>> ListImageFiles(const std::vector<std::string>& paths);

// True when `path` has an image extension OpenCV decodes (.jpg .jpeg .png .bmp .webp .ppm .pgm).
bool HasImageExtension(const std::string& path);

}  // namespace eenn::common

#endif  // EENN_COMMON_IMAGE_H_
