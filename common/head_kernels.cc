#include "common/head_kernels.h"

#include <cstddef>
#include <cstring>
#include <vector>

// The helpers below take and return GCC vectors; they are inlined into each
// clone, so GCC's note about how such values are passed is moot.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace eenn::common {
namespace {

// Each kernel is compiled for AVX2 + FMA and for the baseline, picked at load
// time by the CPU (GCC function multi-versioning): the build stays portable
// and a head's matrix-vector product runs at twice the width where it can.
// Not under ThreadSanitizer: the clone's resolver runs while the executable
// is relocated, before the sanitizer's runtime, and crashes it at start.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define EENN_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EENN_KERNEL
#endif

// Eight floats as one value: GCC's and Clang's vector extension, an AVX
// register in the AVX2 clone and two SSE registers in the baseline one. The
// loops below are written in it because the auto-vectoriser leaves short
// trip counts and several accumulator chains scalar.
typedef float V8 __attribute__((vector_size(32)));

inline V8 Load8(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store8(float* p, const V8& v) { std::memcpy(p, &v, sizeof(v)); }

// The eight lanes, pairwise.
inline float Reduce8(const V8& v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// Sum of n floats in eight lanes, then pairwise.
inline float Sum(const float* p, int64_t n) {
  V8 acc = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += Load8(p + i);
  float s = Reduce8(acc);
  for (; i < n; ++i) s += p[i];
  return s;
}

// Dot product in four accumulator chains (one chain waits on its own
// additions), reading both arrays front to back.
inline float Dot(const float* a, const float* b, int64_t n) {
  V8 acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 += Load8(a + i) * Load8(b + i);
    acc1 += Load8(a + i + 8) * Load8(b + i + 8);
    acc2 += Load8(a + i + 16) * Load8(b + i + 16);
    acc3 += Load8(a + i + 24) * Load8(b + i + 24);
  }
  for (; i + 8 <= n; i += 8) acc0 += Load8(a + i) * Load8(b + i);
  float s = Reduce8((acc0 + acc1) + (acc2 + acc3));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// v[i] = v[2i] + v[2i + 1] for i in [0, n / 2), in place (n even).
inline void HalvePairs(float* v, int64_t n) {
  int64_t i = 0;
  for (; 2 * i + 16 <= n; i += 8) {
    const V8 a = Load8(v + 2 * i), b = Load8(v + 2 * i + 8);
    const V8 even = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
    const V8 odd = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
    Store8(v + i, even + odd);
  }
  for (; 2 * i < n; ++i) v[i] = v[2 * i] + v[2 * i + 1];
}

}  // namespace

EENN_KERNEL void RowMeans(const float* x, int64_t rows, int64_t n, float* out) {
  const float inv = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
  for (int64_t r = 0; r < rows; ++r) out[r] = Sum(x + r * n, n) * inv;
}

EENN_KERNEL void BlockMeans(const float* x, int64_t planes, int64_t h, int64_t w, int64_t p,
                            float* out) {
  const int64_t bh = h / p, bw = w / p;
  const float inv = 1.0f / static_cast<float>(bh * bw);
  // 1. Each band of bh rows summed into one row, whole rows at a time: sums
  //    is [planes][p][w]. 2. Each run of bw values of a row summed: sums
  //    becomes [planes][p][p], the output's layout. (Cell by cell instead
  //    runs loops of bw = w / p values, 1 to 8 here.)
  const int64_t bands = planes * p;
  std::vector<float> buffer(static_cast<std::size_t>(bands * w));
  float* sums = buffer.data();
  for (int64_t c = 0; c < planes; ++c, x += h * w) {
    for (int64_t i = 0; i < p; ++i) {
      float* dst = sums + (c * p + i) * w;
      const float* row = x + i * bh * w;
      int64_t k = 0;
      for (; k + 8 <= w; k += 8) {  // eight columns down the band in a register
        V8 acc = Load8(row + k);
        for (int64_t r = 1; r < bh; ++r) acc += Load8(row + r * w + k);
        Store8(dst + k, acc);
      }
      for (; k < w; ++k) {
        float acc = row[k];
        for (int64_t r = 1; r < bh; ++r) acc += row[r * w + k];
        dst[k] = acc;
      }
    }
  }
  int64_t n = bands * w, run = bw;
  while (run > 1 && run % 2 == 0) {  // halving rounds: runs of 2, 4, 8, ... values
    HalvePairs(sums, n);
    n /= 2;
    run /= 2;
  }
  if (run > 1) {  // what is left of a run that is not a power of two
    for (int64_t g = 0; g < n / run; ++g) {
      float s = 0;
      for (int64_t k = 0; k < run; ++k) s += sums[g * run + k];
      sums[g] = s;
    }
  }
  for (int64_t g = 0; g < bands * p; ++g) out[g] = sums[g] * inv;
}

EENN_KERNEL void LinearRows(const float* in, int64_t batch, int64_t in_features, const float* w,
                            const float* bias, int64_t out_features, bool relu, float* out) {
  // Weight rows in memory order, each used for every input row while it is
  // in L1: at batch 1 the weights are one sequential stream, which the
  // hardware prefetcher keeps up with when they are not cached (a layer
  // that the backbone evicted since the last sample: 2x faster than four
  // interleaved rows).
  for (int64_t k = 0; k < out_features; ++k) {
    const float* wk = w + k * in_features;
    const float bk = bias != nullptr ? bias[k] : 0.0f;
    for (int64_t b = 0; b < batch; ++b) {
      const float r = Dot(in + b * in_features, wk, in_features) + bk;
      out[b * out_features + k] = relu && r < 0 ? 0.0f : r;
    }
  }
}

}  // namespace eenn::common
