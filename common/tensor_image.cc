#include "common/tensor_image.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/image.h"

namespace eenn::common {

absl::StatusOr<torch::Tensor> ImagesToTensor(const std::vector<cv::Mat>& images,
                                             const InputSpec& spec) {
  if (images.empty()) return absl::InvalidArgumentError("no images to convert");
  const int64_t per = spec.shape[0] * spec.shape[1] * spec.shape[2];
  torch::Tensor batch = torch::empty(
      {static_cast<int64_t>(images.size()), spec.shape[0], spec.shape[1], spec.shape[2]},
      torch::kFloat);
  float* data = batch.data_ptr<float>();
  for (size_t i = 0; i < images.size(); ++i) {
    absl::Status s = PreprocessImage(images[i], spec, data + i * per);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("image ", i, ": ", s.message()));
    }
  }
  return batch;
}

}  // namespace eenn::common
