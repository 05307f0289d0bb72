#include "common/head_kernels.h"

namespace eenn::common {
namespace {

// Sum of n floats in eight independent lanes (the compiler keeps them in
// vector registers), then pairwise.
inline float Sum(const float* p, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += p[i];
  return s;
}

inline float Dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void RowMeans(const float* x, int64_t rows, int64_t n, float* out) {
  const float inv = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
  for (int64_t r = 0; r < rows; ++r) out[r] = Sum(x + r * n, n) * inv;
}

void BlockMeans(const float* x, int64_t planes, int64_t h, int64_t w, int64_t p, float* out) {
  const int64_t bh = h / p, bw = w / p;
  const float inv = 1.0f / static_cast<float>(bh * bw);
  for (int64_t c = 0; c < planes; ++c, x += h * w) {
    for (int64_t i = 0; i < p; ++i) {
      for (int64_t j = 0; j < p; ++j) {
        float s = 0;
        for (int64_t r = i * bh; r < (i + 1) * bh; ++r) s += Sum(x + r * w + j * bw, bw);
        *out++ = s * inv;
      }
    }
  }
}

void LinearRows(const float* in, int64_t batch, int64_t in_features, const float* w,
                const float* bias, int64_t out_features, bool relu, float* out) {
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = in + b * in_features;
    float* o = out + b * out_features;
    for (int64_t k = 0; k < out_features; ++k) {
      float v = Dot(row, w + k * in_features, in_features) + (bias != nullptr ? bias[k] : 0.0f);
      o[k] = relu && v < 0 ? 0.0f : v;
    }
  }
}

}  // namespace eenn::common
