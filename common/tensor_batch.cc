#include "common/tensor_batch.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace eenn::common {

absl::Status CheckDatasetFitsInput(const ImageDataset& data, const InputSpec& input) {
  if (data.channels != input.shape[0] || data.height != input.shape[1] ||
      data.width != input.shape[2]) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset images are ", data.channels, "x", data.height, "x", data.width,
        " but the model expects ", input.shape[0], "x", input.shape[1], "x", input.shape[2]));
  }
  return absl::OkStatus();
}

std::pair<torch::Tensor, torch::Tensor> MakeBatch(const ImageDataset& data,
                                                  const std::vector<int64_t>& indices,
                                                  const InputSpec& input, const Augment& augment,
                                                  std::mt19937_64& rng) {
  const int64_t b = static_cast<int64_t>(indices.size());
  const int64_t c = data.channels, h = data.height, w = data.width;
  torch::Tensor x = torch::empty({b, c, h, w}, torch::kFloat);
  torch::Tensor y = torch::empty({b}, torch::kLong);
  float* xp = x.data_ptr<float>();
  int64_t* yp = y.data_ptr<int64_t>();
  float scale[3], shift[3];
  for (int k = 0; k < c; ++k) {
    scale[k] = 1.0f / (255.0f * input.std[k]);
    shift[k] = -input.mean[k] / input.std[k];
  }
  const int pad = augment.crop_padding;
  std::uniform_int_distribution<int> offset(0, 2 * pad);
  std::bernoulli_distribution flip(0.5);
  for (int64_t n = 0; n < b; ++n) {
    const uint8_t* img = data.image(indices[n]);
    yp[n] = data.labels[indices[n]];
    const int dy = pad ? offset(rng) - pad : 0;
    const int dx = pad ? offset(rng) - pad : 0;
    const bool f = augment.hflip && flip(rng);
    float* out = xp + n * c * h * w;
    for (int64_t yy = 0; yy < h; ++yy) {
      const int64_t sy = yy + dy;
      for (int64_t xx = 0; xx < w; ++xx) {
        const int64_t sx = (f ? w - 1 - xx : xx) + dx;
        const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
        const uint8_t* px = inside ? img + (sy * w + sx) * c : nullptr;
        for (int64_t k = 0; k < c; ++k) {
          out[k * h * w + yy * w + xx] = (inside ? px[k] : 0) * scale[k] + shift[k];
        }
      }
    }
  }
  return {x, y};
}

}  // namespace eenn::common
