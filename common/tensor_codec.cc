#include "common/tensor_codec.h"

#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define EENN_CODEC_X86 1
#endif

#include "absl/strings/str_cat.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire format is little-endian; add byte swapping for this host");

namespace eenn::common {
namespace {

absl::Status NonFinite(int64_t i) {
  return absl::InvalidArgumentError(
      absl::StrCat("tensor element ", i, " is not finite (NaN and Inf are refused)"));
}

// Branch-free over the exponent bits, so the compiler vectorises it; the
// scalar search for the offending index only runs on failure.
bool AllFinite(const float* v, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, v + i, 4);
    bad |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

absl::Status CheckFinite(const float* v, int64_t n) {
  if (AllFinite(v, n)) return absl::OkStatus();
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) return NonFinite(i);
  }
  return absl::OkStatus();
}

// int8 quantisation: [lo, hi] of the values (0 included), then
// q = clamp(rint(v / scale) + zp, -128, 127). The SSE2 path computes exactly
// the same bytes (cvtps rounds to nearest even like lrint, and the saturating
// packs clamp to [-128, 127]).
// One pass: the range, and whether every value is finite (exponent bits not
// all ones), so int8 encoding reads its input twice instead of three times.
bool MinMaxFinite(const float* v, int64_t n, float* lo_out, float* hi_out) {
  float lo = 0.0f, hi = 0.0f;
  uint32_t bad = 0;
  int64_t i = 0;
#ifdef EENN_CODEC_X86
  __m128 vlo = _mm_setzero_ps(), vhi = _mm_setzero_ps();
  const __m128i exp_mask = _mm_set1_epi32(0x7f800000);
  __m128i vbad = _mm_setzero_si128();
  for (; i + 4 <= n; i += 4) {
    const __m128 x = _mm_loadu_ps(v + i);
    vlo = _mm_min_ps(vlo, x);
    vhi = _mm_max_ps(vhi, x);
    const __m128i e = _mm_and_si128(_mm_castps_si128(x), exp_mask);
    vbad = _mm_or_si128(vbad, _mm_cmpeq_epi32(e, exp_mask));
  }
  alignas(16) float l4[4], h4[4];
  _mm_store_ps(l4, vlo);
  _mm_store_ps(h4, vhi);
  for (int k = 0; k < 4; ++k) {
    lo = std::min(lo, l4[k]);
    hi = std::max(hi, h4[k]);
  }
  bad = static_cast<uint32_t>(_mm_movemask_epi8(vbad));
#endif
  for (; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, v + i, 4);
    bad |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  *lo_out = lo;
  *hi_out = hi;
  return bad == 0;
}

void QuantizeInt8(const float* v, int64_t n, float inv, int32_t zp, int8_t* out) {
  int64_t i = 0;
#ifdef EENN_CODEC_X86
  const __m128 vinv = _mm_set1_ps(inv);
  const __m128i vzp = _mm_set1_epi32(zp);
  for (; i + 16 <= n; i += 16) {
    __m128i q[4];
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm_add_epi32(_mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(v + i + 4 * k), vinv)), vzp);
    }
    const __m128i lo16 = _mm_packs_epi32(q[0], q[1]);
    const __m128i hi16 = _mm_packs_epi32(q[2], q[3]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_packs_epi16(lo16, hi16));
  }
#endif
  for (; i < n; ++i) {
    const int32_t q = static_cast<int32_t>(std::lrint(v[i] * inv)) + zp;
    out[i] = static_cast<int8_t>(std::clamp<int32_t>(q, -128, 127));
  }
}

#ifdef EENN_CODEC_X86
// Hardware half conversion (F16C, IEEE round to nearest even, subnormals
// included), used when the CPU has it.
// CPUID leaf 1, ECX: bit 28 AVX, bit 29 F16C (clang's __builtin_cpu_supports
// does not know "f16c").
bool HasF16c() {
  static const bool has = [] {
    unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    return (ecx & (1u << 28)) != 0 && (ecx & (1u << 29)) != 0;
  }();
  return has;
}

__attribute__((target("avx,f16c"))) int64_t F16cEncode(const float* v, int64_t n, unsigned char* out) {
  int64_t i = 0;
  // FloatToHalf saturates at the largest finite half instead of rounding to Inf.
  const __m256 top = _mm256_set1_ps(65504.0f), bottom = _mm256_set1_ps(-65504.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(v + i), bottom), top);
    const __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), h);
  }
  return i;
}

__attribute__((target("avx,f16c"))) int64_t F16cDecode(const unsigned char* in, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  return i;
}
#endif

}  // namespace

absl::string_view EncodingName(WireEncoding e) {
  switch (e) {
    case WireEncoding::kFp32: return "fp32";
    case WireEncoding::kFp16: return "fp16";
    case WireEncoding::kInt8: return "int8";
  }
  return "unknown";
}

absl::StatusOr<WireEncoding> ParseEncoding(absl::string_view name) {
  if (name == "fp32") return WireEncoding::kFp32;
  if (name == "fp16") return WireEncoding::kFp16;
  if (name == "int8") return WireEncoding::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown wire encoding '", name, "' (expected fp32, fp16 or int8)"));
}

absl::string_view CompressionName(WireCompression c) {
  return c == WireCompression::kZstd ? "zstd" : "none";
}

absl::StatusOr<WireCompression> ParseCompression(absl::string_view name) {
  if (name == "none") return WireCompression::kNone;
  if (name == "zstd") return WireCompression::kZstd;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown compression '", name, "' (expected none or zstd)"));
}

int BytesPerElement(WireEncoding e) {
  switch (e) {
    case WireEncoding::kFp32: return 4;
    case WireEncoding::kFp16: return 2;
    case WireEncoding::kInt8: return 1;
  }
  return 0;
}

EncodedTensorView View(const EncodedTensor& t) {
  return EncodedTensorView{t.shape, t.encoding, t.scale, t.zero_point, t.compression,
                           t.encoded_size, t.data};
}

absl::StatusOr<int64_t> CheckedNumElements(const std::vector<int64_t>& shape, int64_t max_elements) {
  if (shape.empty()) return absl::InvalidArgumentError("tensor shape is empty");
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t d = shape[i];
    if (d < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor dimension ", i, " is ", d, " (each must be >= 1)"));
    }
    if (n > max_elements / d) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor shape holds more than the limit of ", max_elements, " elements"));
    }
    n *= d;
  }
  return n;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a >= 65504.0f) return static_cast<uint16_t>(sign | 0x7bffu);  // saturate (Inf too)
  x &= 0x7fffffffu;
  if (x < 0x38800000u) {  // below 2^-14: a subnormal half (or zero)
    // a * 2^24 is exact in float; rint rounds to nearest even.
    const uint32_t m = static_cast<uint32_t>(std::nearbyint(a * 16777216.0f));
    return static_cast<uint16_t>(sign | m);
  }
  const uint32_t mant = x & 0x7fffffu;
  const uint32_t exp = (x >> 23) - 127 + 15;
  uint32_t h = (exp << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry bumps the exponent, as it should
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    const float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

absl::StatusOr<EncodedTensor> EncodeTensor(const float* values, const std::vector<int64_t>& shape,
                                           const EncodeOptions& options) {
  auto n_or = CheckedNumElements(shape, std::numeric_limits<int64_t>::max() / 4);
  if (!n_or.ok()) return n_or.status();
  const int64_t n = *n_or;
  // int8 checks finiteness in its range pass; the others here.
  if (options.encoding != WireEncoding::kInt8) {
    if (auto s = CheckFinite(values, n); !s.ok()) return s;
  }
  EncodedTensor t;
  t.shape = shape;
  t.encoding = options.encoding;
  t.compression = options.compression;
  t.encoded_size = n * BytesPerElement(options.encoding);
  std::string raw(static_cast<size_t>(t.encoded_size), '\0');
  switch (options.encoding) {
    case WireEncoding::kFp32:
      std::memcpy(raw.data(), values, raw.size());
      break;
    case WireEncoding::kFp16: {
      auto* out = reinterpret_cast<unsigned char*>(raw.data());
      int64_t done = 0;
#ifdef EENN_CODEC_X86
      if (HasF16c()) done = F16cEncode(values, n, out);
#endif
      for (int64_t i = done; i < n; ++i) {
        const uint16_t h = FloatToHalf(values[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      break;
    }
    case WireEncoding::kInt8: {
      float lo = 0.0f, hi = 0.0f;  // 0 always representable
      if (!MinMaxFinite(values, n, &lo, &hi)) return CheckFinite(values, n);  // names the element
      float scale = (hi - lo) / 255.0f;
      if (!(scale > 0.0f) || !std::isfinite(scale)) scale = 1.0f;  // all zeros
      const int32_t zp =
          std::clamp<int32_t>(static_cast<int32_t>(std::lround(-128.0f - lo / scale)), -128, 127);
      const float inv = 1.0f / scale;
      QuantizeInt8(values, n, inv, zp, reinterpret_cast<int8_t*>(raw.data()));
      t.scale = scale;
      t.zero_point = zp;
      break;
    }
  }
  if (options.compression == WireCompression::kZstd) {
    std::string packed(ZSTD_compressBound(raw.size()), '\0');
    const size_t got =
        ZSTD_compress(packed.data(), packed.size(), raw.data(), raw.size(), options.zstd_level);
    if (ZSTD_isError(got)) {
      return absl::InternalError(absl::StrCat("zstd compression failed: ", ZSTD_getErrorName(got)));
    }
    packed.resize(got);
    t.data = std::move(packed);
  } else {
    t.data = std::move(raw);
  }
  return t;
}

absl::Status CheckEncodedSize(const EncodedTensorView& t, int64_t n) {
  const int bpe = BytesPerElement(t.encoding);
  if (bpe == 0) return absl::InvalidArgumentError("tensor encoding is unknown");
  const int64_t expect = n * bpe;
  if (t.encoded_size != expect) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor encoded_size is ", t.encoded_size, " bytes, but ", n, " ", EncodingName(t.encoding),
        " elements take ", expect));
  }
  if (t.compression == WireCompression::kNone && static_cast<int64_t>(t.data.size()) != expect) {
    return absl::InvalidArgumentError(absl::StrCat("tensor data holds ", t.data.size(),
                                                   " bytes, shape and encoding need ", expect));
  }
  return absl::OkStatus();
}

absl::Status DecodeTensor(const EncodedTensorView& t, int64_t max_elements, float* out,
                          int64_t out_capacity) {
  auto n_or = CheckedNumElements(t.shape, max_elements);
  if (!n_or.ok()) return n_or.status();
  const int64_t n = *n_or;
  if (n > out_capacity) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor holds ", n, " elements, the destination ", out_capacity));
  }
  if (auto s = CheckEncodedSize(t, n); !s.ok()) return s;
  const int64_t expect = n * BytesPerElement(t.encoding);
  std::string unpacked;
  absl::string_view raw = t.data;
  if (t.compression == WireCompression::kZstd) {
    const unsigned long long content = ZSTD_getFrameContentSize(t.data.data(), t.data.size());
    if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN) {
      return absl::InvalidArgumentError("tensor data is not a zstd frame with a declared size");
    }
    if (content != static_cast<unsigned long long>(expect)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor zstd frame declares ", content, " bytes, expected ", expect));
    }
    unpacked.resize(static_cast<size_t>(expect));
    const size_t got = ZSTD_decompress(unpacked.data(), unpacked.size(), t.data.data(), t.data.size());
    if (ZSTD_isError(got) || got != unpacked.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor zstd frame is corrupt: ",
          ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short output"));
    }
    raw = unpacked;
  } else if (t.compression != WireCompression::kNone) {
    return absl::InvalidArgumentError("tensor compression is unknown");
  }
  if (static_cast<int64_t>(raw.size()) != expect) {
    return absl::InvalidArgumentError(absl::StrCat("tensor data holds ", raw.size(),
                                                   " bytes, shape and encoding need ", expect));
  }
  switch (t.encoding) {
    case WireEncoding::kFp32:
      std::memcpy(out, raw.data(), raw.size());
      break;
    case WireEncoding::kFp16: {
      const auto* in = reinterpret_cast<const unsigned char*>(raw.data());
      int64_t done = 0;
#ifdef EENN_CODEC_X86
      if (HasF16c()) done = F16cDecode(in, n, out);
#endif
      for (int64_t i = done; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      break;
    }
    case WireEncoding::kInt8: {
      if (!std::isfinite(t.scale) || !(t.scale > 0.0f)) {
        return absl::InvalidArgumentError(
            absl::StrCat("int8 tensor scale is ", t.scale, " (must be finite and > 0)"));
      }
      if (t.zero_point < -128 || t.zero_point > 127) {
        return absl::InvalidArgumentError(
            absl::StrCat("int8 tensor zero_point is ", t.zero_point, " (must be in [-128, 127])"));
      }
      const auto* in = reinterpret_cast<const int8_t*>(raw.data());
      const float scale = t.scale;
      const int32_t zp = t.zero_point;
      for (int64_t i = 0; i < n; ++i) out[i] = scale * static_cast<float>(in[i] - zp);
      // |q - zp| <= 255, so every value is finite when scale * 255 is.
      if (std::isfinite(scale * 255.0f)) return absl::OkStatus();
      break;
    }
  }
  return CheckFinite(out, n);
}

absl::StatusOr<std::vector<float>> DecodeTensor(const EncodedTensorView& t, int64_t max_elements) {
  auto n = CheckedNumElements(t.shape, max_elements);
  if (!n.ok()) return n.status();
  std::vector<float> out(static_cast<size_t>(*n));
  if (auto s = DecodeTensor(t, max_elements, out.data(), *n); !s.ok()) return s;
  return out;
}

}  // namespace eenn::common
