#include "common/exit_outputs.h"

#include <torch/torch.h>

#include "common/tensor_batch.h"

namespace eenn::common {

std::vector<double> ExitOutputs::ExitAccuracy() const {
  if (labels.empty()) return {};
  std::vector<double> acc(predicted[0].size(), 0.0);
  for (size_t i = 0; i < labels.size(); ++i) {
    for (size_t g = 0; g < acc.size(); ++g) acc[g] += predicted[i][g] == labels[i];
  }
  for (double& a : acc) a /= labels.size();
  return acc;
}

CalibrationData ExitOutputs::ToCalibrationData(std::vector<double> segment_cost,
                                               std::vector<double> head_cost) const {
  CalibrationData d;
  d.confidence = confidence;
  for (size_t i = 0; i < labels.size(); ++i) {
    std::vector<bool> row;
    for (int64_t p : predicted[i]) row.push_back(p == labels[i]);
    d.correct.push_back(std::move(row));
  }
  d.segment_cost = std::move(segment_cost);
  d.head_cost = std::move(head_cost);
  return d;
}

ExitOutputs CollectExitOutputs(EarlyExitNet& net, const ImageDataset& data,
                               const std::vector<int64_t>& indices, const InputSpec& input,
                               ConfidenceFunction confidence, int batch) {
  ExitOutputs out;
  net.eval();
  torch::InferenceMode guard;
  std::mt19937_64 rng(0);
  for (size_t s = 0; s < indices.size(); s += batch) {
    std::vector<int64_t> idx(indices.begin() + s,
                             indices.begin() + std::min(indices.size(), s + batch));
    auto [x, y] = MakeBatch(data, idx, input, {}, rng);
    std::vector<torch::Tensor> logits = net.ForwardExits(x, net.num_exits() - 1);
    std::vector<torch::Tensor> conf, pred;
    for (auto& l : logits) {
      torch::Tensor p = torch::softmax(l, 1);
      conf.push_back(Confidence(p, confidence).contiguous());
      pred.push_back(p.argmax(1).contiguous());
    }
    for (size_t i = 0; i < idx.size(); ++i) {
      std::vector<float> c;
      std::vector<int64_t> p;
      for (size_t g = 0; g < logits.size(); ++g) {
        c.push_back(conf[g].data_ptr<float>()[i]);
        p.push_back(pred[g].data_ptr<int64_t>()[i]);
      }
      out.confidence.push_back(std::move(c));
      out.predicted.push_back(std::move(p));
      out.labels.push_back(y[i].item<int64_t>());
    }
  }
  return out;
}

}  // namespace eenn::common
