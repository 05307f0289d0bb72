#include "common/layer_costs.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>

#include "common/fast_forward.h"

namespace eenn::common {
namespace {
double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}
}  // namespace

std::vector<double> LayerCosts::SegmentMs(const std::vector<int>& exit_layers) const {
  std::vector<double> seg;
  int prev = -1;
  for (int l : exit_layers) {
    double s = 0;
    for (int i = prev + 1; i <= l; ++i) s += layer_ms[i];
    seg.push_back(s);
    prev = l;
  }
  return seg;
}

LayerCosts MeasureLayerCosts(EarlyExitNet& net, int reps, int warmup) {
  torch::InferenceMode guard;
  const int n = net.num_layers();
  std::vector<std::vector<double>> lt(n), ht(net.num_exits());
  std::vector<int64_t> shape = {1};
  shape.insert(shape.end(), net.input_shape().begin(), net.input_shape().end());
  // The runtime's path: on oneDNN a fused group (conv + BN + ReLU layers)
  // is one step whose time goes to its first layer (the others get 0), and an
  // exit head includes the conversion of its input to a dense tensor.
  const LoweredBackbone* lowered = net.lowered();
  for (int r = 0; r < warmup + reps; ++r) {
    torch::Tensor x = torch::randn(shape);
    if (lowered != nullptr) x = ToOneDnn(x);
    for (int i = 0; i < n; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      int last = i;
      if (lowered != nullptr) {
        x = lowered->Step(i, n, x, &last);
      } else {
        x = net.ForwardLayers(x, i, i + 1);
      }
      auto t1 = std::chrono::steady_clock::now();
      if (r >= warmup) {
        lt[i].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        for (int k = i + 1; k <= last; ++k) lt[k].push_back(0.0);
      }
      i = last;
      const int g = net.ExitIndexAtLayer(i);
      if (g >= 0) {
        torch::Tensor features = lowered != nullptr ? ToDense(x) : x;  // as Run() does
        torch::Tensor p = torch::softmax(net.ForwardHead(features, g), 1).max();
        (void)p;
        auto t2 = std::chrono::steady_clock::now();
        if (r >= warmup) ht[g].push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
      }
    }
  }
  LayerCosts c;
  for (auto& v : lt) c.layer_ms.push_back(Median(v));
  for (auto& v : ht) c.head_ms.push_back(Median(v));
  return c;
}

}  // namespace eenn::common
