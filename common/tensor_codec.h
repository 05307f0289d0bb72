// The wire codec for intermediate tensors: float32 values <-> bytes in one of
// three element encodings, optionally zstd-compressed. Torch-free and
// proto-free; proto/wire.h maps EncodedTensor to eenn.v1.Tensor.
//
// Request flow: eenn-device encodes PartialResult::pending_input before the
// Resume RPC; eenn-server validates and decodes it before batching.
//
// Encodings:
//   fp32  4 bytes/element, little-endian IEEE binary32 (exact);
//   fp16  2 bytes/element, binary16, round to nearest even (values beyond
//         +-65504 saturate to +-65504 so a finite tensor stays finite);
//   int8  1 byte/element, per-tensor affine: x = scale * (q - zero_point),
//         scale and zero_point chosen from the tensor's min and max (0 is
//         always exactly representable, so ReLU zeros stay zeros).
// Non-finite policy: NaN or Inf are refused on encode and on decode
// (InvalidArgument naming the element index); no layer of a trained network
// produces them, so one on the wire means corruption or a hostile peer.
#ifndef EENN_COMMON_TENSOR_CODEC_H_
#define EENN_COMMON_TENSOR_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace eenn::common {

enum class WireEncoding { kFp32 = 1, kFp16 = 2, kInt8 = 3 };
enum class WireCompression { kNone = 0, kZstd = 1 };

absl::string_view EncodingName(WireEncoding e);               // "fp32", "fp16", "int8"
absl::StatusOr<WireEncoding> ParseEncoding(absl::string_view name);
absl::string_view CompressionName(WireCompression c);         // "none", "zstd"
absl::StatusOr<WireCompression> ParseCompression(absl::string_view name);
int BytesPerElement(WireEncoding e);

// An encoded tensor that owns its bytes (the encoder's output).
struct EncodedTensor {
  std::vector<int64_t> shape;
  WireEncoding encoding = WireEncoding::kFp32;
  float scale = 0.0f;      // int8 only
  int32_t zero_point = 0;  // int8 only
  WireCompression compression = WireCompression::kNone;
  int64_t encoded_size = 0;  // bytes before compression
  std::string data;          // encoded (then compressed) bytes
};

// A view of an encoded tensor whose bytes live elsewhere (a protobuf message).
struct EncodedTensorView {
  std::vector<int64_t> shape;
  WireEncoding encoding = WireEncoding::kFp32;
  float scale = 0.0f;
  int32_t zero_point = 0;
  WireCompression compression = WireCompression::kNone;
  int64_t encoded_size = 0;
  absl::string_view data;
};

EncodedTensorView View(const EncodedTensor& t);

// Number of elements of `shape`. InvalidArgument for an empty shape, a
// dimension < 1, or a product above max_elements (checked without overflow).
absl::StatusOr<int64_t> CheckedNumElements(const std::vector<int64_t>& shape, int64_t max_elements);

// The byte counts `t` declares against its `n` elements: a known encoding,
// encoded_size == n x bytes per element, and uncompressed data of that size.
// Nothing is decoded (DecodeTensor checks the same first); InvalidArgument.
absl::Status CheckEncodedSize(const EncodedTensorView& t, int64_t n);

struct EncodeOptions {
  WireEncoding encoding = WireEncoding::kFp32;
  WireCompression compression = WireCompression::kNone;
  int zstd_level = 1;  // 1 is fast; higher trades CPU for bytes
};

// Encodes `values` (row-major, shape's element count). InvalidArgument for a
// bad shape or a non-finite value.
absl::StatusOr<EncodedTensor> EncodeTensor(const float* values, const std::vector<int64_t>& shape,
                                           const EncodeOptions& options);

// Decodes into `out` (resized to the element count). InvalidArgument when the
// shape, encoding, byte counts, compression frame or int8 parameters disagree,
// when the element count exceeds max_elements, or for a non-finite value.
absl::Status DecodeTensor(const EncodedTensorView& t, int64_t max_elements, float* out,
                          int64_t out_capacity);
absl::StatusOr<std::vector<float>> DecodeTensor(const EncodedTensorView& t, int64_t max_elements);

// Bit-exact IEEE conversions used by fp16 (exposed for tests).
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);

}  // namespace eenn::common

#endif  // EENN_COMMON_TENSOR_CODEC_H_
