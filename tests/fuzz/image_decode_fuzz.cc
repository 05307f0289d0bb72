// Fuzz target: the device's image path. The input is an uploaded image as a
// Classify request carries it: header check, decode (OpenCV) under limits, then
// preprocessing into a 3x32x32 tensor. Any bytes must be refused with
// InvalidArgument or give a tensor of finite values; a declared size over the
// pixel limit must never reach the decoder.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eenn::common::DecodeLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_pixels = 1 << 20;
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto image = eenn::common::DecodeImage(bytes, limits);
  if (!image.ok()) {
    if (image.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  // What the header declared is what was decoded, and it is within the limit.
  auto header = eenn::common::ReadImageHeader(bytes);
  if (!header.ok()) std::abort();
  if (static_cast<int64_t>(image->rows) * image->cols > limits.max_pixels) std::abort();
  eenn::common::InputSpec spec;
  spec.shape = {3, 32, 32};
  spec.mean = {0.4914f, 0.4822f, 0.4465f};
  spec.std = {0.2470f, 0.2435f, 0.2616f};
  std::vector<float> out(3 * 32 * 32);
  auto s = eenn::common::PreprocessImage(*image, spec, out.data());
  if (!s.ok()) {
    if (s.code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  for (float v : out) {
    if (!std::isfinite(v)) std::abort();
  }
  return 0;
}
