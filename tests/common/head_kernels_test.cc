// The exit heads' inference loops (common/head_kernels.h) against plain
// double-precision references, on the shapes their vector code treats
// differently: runs of cells that are powers of two and that are not, rows
// narrower than a vector, tails after the last full vector, batches.
#include "common/head_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace eenn::common {
namespace {

std::vector<float> Random(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.5f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

void ExpectNear(const std::vector<double>& want, const float* got, const std::string& what) {
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << what << ", element " << i;
  }
}

TEST(HeadKernelsTest, BlockMeansEqualsCellAverages) {
  struct Shape {
    int64_t planes, h, w, p;
  };
  // Cells of 3x3 (odd runs), 2x2, 8x8, 14x14 (halved once, then a run of 7),
  // 1x1 on a 4-wide row (narrower than a vector), 3x10 on a non-square map.
  for (const Shape& s : std::vector<Shape>{{3, 12, 12, 4}, {5, 8, 8, 4}, {2, 32, 32, 4},
                                           {3, 28, 28, 2}, {4, 4, 4, 4}, {2, 6, 20, 2}}) {
    std::vector<float> x = Random(static_cast<size_t>(s.planes * s.h * s.w), 7);
    const int64_t bh = s.h / s.p, bw = s.w / s.p;
    std::vector<double> want;
    for (int64_t c = 0; c < s.planes; ++c) {
      for (int64_t i = 0; i < s.p; ++i) {
        for (int64_t j = 0; j < s.p; ++j) {
          double sum = 0;
          for (int64_t r = i * bh; r < (i + 1) * bh; ++r) {
            for (int64_t k = j * bw; k < (j + 1) * bw; ++k) sum += x[(c * s.h + r) * s.w + k];
          }
          want.push_back(sum / static_cast<double>(bh * bw));
        }
      }
    }
    std::vector<float> got(want.size(), -1e9f);
    BlockMeans(x.data(), s.planes, s.h, s.w, s.p, got.data());
    ExpectNear(want, got.data(),
               "planes " + std::to_string(s.planes) + ", " + std::to_string(s.h) + "x" + std::to_string(s.w) +
                   " to " + std::to_string(s.p) + "x" + std::to_string(s.p));
  }
}

TEST(HeadKernelsTest, RowMeansEqualsRowAverages) {
  for (int64_t n : {1, 7, 16, 49, 100}) {
    const int64_t rows = 5;
    std::vector<float> x = Random(static_cast<size_t>(rows * n), 3);
    std::vector<double> want;
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (int64_t k = 0; k < n; ++k) sum += x[r * n + k];
      want.push_back(sum / static_cast<double>(n));
    }
    std::vector<float> got(rows);
    RowMeans(x.data(), rows, n, got.data());
    ExpectNear(want, got.data(), "n " + std::to_string(n));
  }
}

TEST(HeadKernelsTest, LinearRowsEqualsTheMatrixProduct) {
  // Input widths around the 8- and 32-wide loops; with and without bias and
  // ReLU; one row and a batch.
  for (int64_t in : {1, 7, 8, 33, 100, 515}) {
    for (int64_t out : {1, 3, 10}) {
      for (int64_t batch : {1, 3}) {
        for (bool relu : {false, true}) {
          for (bool with_bias : {false, true}) {
            std::vector<float> x = Random(static_cast<size_t>(batch * in), 11);
            std::vector<float> w = Random(static_cast<size_t>(out * in), 13);
            std::vector<float> b = Random(static_cast<size_t>(out), 17);
            std::vector<double> want;
            for (int64_t r = 0; r < batch; ++r) {
              for (int64_t o = 0; o < out; ++o) {
                double v = with_bias ? b[o] : 0.0;
                for (int64_t k = 0; k < in; ++k) v += static_cast<double>(x[r * in + k]) * w[o * in + k];
                want.push_back(relu && v < 0 ? 0.0 : v);
              }
            }
            std::vector<float> got(want.size(), -1e9f);
            LinearRows(x.data(), batch, in, w.data(), with_bias ? b.data() : nullptr, out, relu, got.data());
            // Sums of up to 515 products of O(1) values: scale the tolerance.
            for (size_t i = 0; i < want.size(); ++i) {
              EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i])) * std::sqrt(static_cast<double>(in)))
                  << "in " << in << ", out " << out << ", batch " << batch << ", relu " << relu << ", bias "
                  << with_bias << ", element " << i;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace eenn::common
