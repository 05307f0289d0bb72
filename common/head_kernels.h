// Plain loops behind the pooled classifier heads at inference: at batch 1 a
// head is a few thousand multiply-adds, where LibTorch's per-operator dispatch
// (pool, flatten, matrix-vector product, bias, ReLU) costs more than the
// arithmetic. No LibTorch here; the caller passes contiguous float buffers.
#ifndef EENN_COMMON_HEAD_KERNELS_H_
#define EENN_COMMON_HEAD_KERNELS_H_

#include <cstdint>

namespace eenn::common {

// out[r] = mean of x[r * n .. r * n + n) for r in [0, rows): global average
// pooling of an NCHW map seen as rows = N * C rows of n = H * W values.
void RowMeans(const float* x, int64_t rows, int64_t n, float* out);

// Average pooling of `planes` H x W planes to p x p cells each (H and W
// divisible by p), written plane by plane in row-major cell order: the layout
// of adaptive_avg_pool2d(x, {p, p}).flatten(1).
void BlockMeans(const float* x, int64_t planes, int64_t h, int64_t w, int64_t p, float* out);

// out[b, o] = bias[o] + sum_i w[o, i] * in[b, i] (bias may be null), then
// max(0, .) when `relu`: a Linear layer on `batch` rows, w row-major [out, in].
void LinearRows(const float* in, int64_t batch, int64_t in_features, const float* w,
                const float* bias, int64_t out_features, bool relu, float* out);

}  // namespace eenn::common

#endif  // EENN_COMMON_HEAD_KERNELS_H_
