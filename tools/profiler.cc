#include "tools/profiler.h"

#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/fast_forward.h"
#include "common/image.h"
#include "common/status_macros.h"
#include "common/tensor_codec.h"

namespace eenn::tools {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

absl::StatusOr<std::string> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open image '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<torch::Tensor> Preprocess(const std::string& bytes, const std::string& name,
                                         const common::InputSpec& spec) {
  absl::StatusOr<cv::Mat> img = common::DecodeImage(bytes);
  if (!img.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", img.status().message()));
  std::vector<int64_t> shape = {1};
  shape.insert(shape.end(), spec.shape.begin(), spec.shape.end());
  torch::Tensor x = torch::empty(shape);
  absl::Status s = common::PreprocessImage(*img, spec, x.data_ptr<float>());
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", s.message()));
  return x;
}

std::string Host() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::string NowUtc() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Codec sizes and costs of one sample's tensor, accumulated over samples.
class WireAccumulator {
 public:
  explicit WireAccumulator(const std::vector<std::string>& keys) : keys_(keys) {}

  absl::Status Add(const torch::Tensor& t) {
    torch::Tensor c = t.contiguous();
    std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
    for (const std::string& key : keys_) {
      EENN_ASSIGN_OR_RETURN(auto format, common::ParseWireKey(key));
      common::EncodeOptions o;
      o.encoding = format.first;
      o.compression = format.second;
      const auto t0 = Clock::now();
      EENN_ASSIGN_OR_RETURN(common::EncodedTensor e, common::EncodeTensor(c.data_ptr<float>(), shape, o));
      const auto t1 = Clock::now();
      EENN_ASSIGN_OR_RETURN(std::vector<float> back,
                            common::DecodeTensor(common::View(e), c.numel()));
      const auto t2 = Clock::now();
      common::WireCost& w = sum_[key];
      w.bytes += static_cast<double>(e.data.size());
      w.encode_ms += Ms(t0, t1);
      w.decode_ms += Ms(t1, t2);
    }
    ++n_;
    return absl::OkStatus();
  }

  std::map<std::string, common::WireCost> Mean() const {
    std::map<std::string, common::WireCost> out;
    for (const auto& [k, w] : sum_) {
      out[k] = {w.bytes / n_, w.encode_ms / n_, w.decode_ms / n_};
    }
    return out;
  }

 private:
  std::vector<std::string> keys_;
  std::map<std::string, common::WireCost> sum_;
  int n_ = 0;
};

}  // namespace

absl::StatusOr<common::Profile> ProfileBundle(const common::Bundle& bundle,
                                              const std::vector<std::string>& images,
                                              const std::vector<std::string>& calibration,
                                              const ProfilerOptions& options) {
  if (images.empty()) return absl::InvalidArgumentError("no images to profile with");
  if (options.samples < 1 || options.warmup < 0 || options.wire_samples < 1 ||
      options.calibration_batch < 1) {
    return absl::InvalidArgumentError("samples, wire samples and calibration batch must be >= 1");
  }
  for (const std::string& k : options.wire_keys) EENN_RETURN_IF_ERROR(common::ParseWireKey(k).status());
  auto say = [&](const std::string& s) {
    if (options.progress) options.progress(s);
  };
  common::EarlyExitNet& net = *bundle.model;
  const common::InputSpec& spec = bundle.manifest.input;
  const int n_layers = net.num_layers();
  const int n_exits = net.num_exits();
  torch::InferenceMode guard;

  // Encoded images in memory: decoding is part of what is timed.
  const size_t distinct = std::min<size_t>(images.size(), static_cast<size_t>(options.samples));
  std::vector<std::string> bytes;
  for (size_t i = 0; i < distinct; ++i) {
    EENN_ASSIGN_OR_RETURN(std::string b, ReadBytes(images[i]));
    bytes.push_back(std::move(b));
  }
  std::vector<torch::Tensor> inputs;
  for (size_t i = 0; i < distinct; ++i) {
    EENN_ASSIGN_OR_RETURN(torch::Tensor x, Preprocess(bytes[i], images[i], spec));
    inputs.push_back(x);
  }

  common::Profile p;
  p.model_name = bundle.manifest.model_name;
  p.model_version = bundle.manifest.model_version;
  p.architecture = bundle.manifest.spec.architecture;
  p.host = Host();
  p.threads = options.threads > 0 ? options.threads : torch::get_num_threads();
  p.created = NowUtc();
  p.samples = options.samples;
  p.input_shape = spec.shape;
  p.num_classes = net.num_classes();

  // Per-layer and per-head times, the way the runtime walks the backbone.
  say("per-layer and per-head times");
  std::vector<double> pre_ms;
  std::vector<std::vector<double>> layer_ms(n_layers), head_ms(n_exits);
  for (int r = 0; r < options.warmup + options.samples; ++r) {
    const size_t i = static_cast<size_t>(r) % distinct;
    const auto t0 = Clock::now();
    EENN_ASSIGN_OR_RETURN(torch::Tensor x, Preprocess(bytes[i], images[i], spec));
    const auto t1 = Clock::now();
    const bool timed = r >= options.warmup;
    if (timed) pre_ms.push_back(Ms(t0, t1));
    // On the oneDNN path a fused group (conv + BN + ReLU layers) runs as one
    // step: its time goes to its first layer and the others get 0, and the
    // input conversion goes to layer 0, as a range from layer 0 runs them.
    const common::LoweredBackbone* lowered = net.lowered();
    const auto start = Clock::now();
    if (lowered != nullptr) x = common::ToOneDnn(x);
    for (int l = 0; l < n_layers; ++l) {
      const auto a = l == 0 ? start : Clock::now();
      int last = l;
      if (lowered != nullptr) {
        x = lowered->Step(l, n_layers, x, &last);
      } else {
        x = net.ForwardLayers(x, l, l + 1);
      }
      const auto b = Clock::now();
      if (timed) {
        layer_ms[l].push_back(Ms(a, b));
        for (int k = l + 1; k <= last; ++k) layer_ms[k].push_back(0.0);
      }
      l = last;
      const int g = net.ExitIndexAtLayer(l);
      if (g >= 0) {
        // The head, its confidence and the decision, as the runtime evaluates it.
        torch::Tensor features = lowered != nullptr ? common::ToDense(x) : x;  // as Run() does
        const float conf = torch::softmax(net.ForwardHead(features, g), 1).max().item<float>();
        (void)conf;
        if (timed) head_ms[g].push_back(Ms(b, Clock::now()));
      }
    }
  }
  p.preprocess_ms = common::ComputeTimeStats(pre_ms);

  // Output sizes and codec costs.
  say("wire sizes and codec costs");
  WireAccumulator in_wire(options.wire_keys);
  std::vector<WireAccumulator> out_wire(n_layers, WireAccumulator(options.wire_keys));
  for (int r = 0; r < options.wire_samples; ++r) {
    torch::Tensor x = inputs[static_cast<size_t>(r) % distinct];
    EENN_RETURN_IF_ERROR(in_wire.Add(x));
    for (int l = 0; l < n_layers; ++l) {
      x = net.ForwardLayers(x, l, l + 1);
      EENN_RETURN_IF_ERROR(out_wire[l].Add(x));
    }
  }
  p.input_wire = in_wire.Mean();

  std::map<std::string, int> class_count;
  for (int l = 0; l < n_layers; ++l) {
    common::LayerProfile lp;
    lp.index = l;
    lp.class_name = net.layer_info()[l].class_name;
    lp.key = absl::StrCat("layer_", l, "_", lp.class_name, "_", ++class_count[lp.class_name]);
    lp.ms = common::ComputeTimeStats(layer_ms[l]);
    lp.output_shape = net.layer_info()[l].output_shape;
    for (const auto& t : net.LayerModule(l)->parameters()) lp.param_bytes += t.numel() * t.element_size();
    for (const auto& t : net.LayerModule(l)->buffers()) lp.param_bytes += t.numel() * t.element_size();
    lp.wire = out_wire[l].Mean();
    p.layers.push_back(std::move(lp));
  }
  for (int g = 0; g < n_exits; ++g) {
    common::HeadProfile h;
    h.exit_index = g;
    h.layer = net.exit_layers()[g];
    h.key = absl::StrCat("gate_", g, "_layer_", h.layer, "_ClassifierHead_1");
    h.ms = common::ComputeTimeStats(head_ms[g]);
    p.heads.push_back(std::move(h));
  }

  // Single-exit and whole-network latencies (from the preprocessed input).
  say("single-exit latencies");
  for (int g = 0; g < n_exits; ++g) {
    // The runtime's path up to exit g, with that exit always firing.
    common::ExitPolicy only = bundle.policy;
    only.thresholds.assign(n_exits, -1.0f);
    only.thresholds[g] = 0.0f;
    const int end = net.exit_layers()[g] + 1;
    std::vector<double> ms;
    for (int r = 0; r < options.warmup + options.samples; ++r) {
      const torch::Tensor& x = inputs[static_cast<size_t>(r) % distinct];
      const auto a = Clock::now();
      EENN_RETURN_IF_ERROR(net.Run(x, 0, end, only).status());
      if (r >= options.warmup) ms.push_back(Ms(a, Clock::now()));
    }
    common::ExitProfile e;
    e.exit_index = g;
    e.layer = net.exit_layers()[g];
    e.threshold = bundle.policy.thresholds[g];
    e.single_ms = common::ComputeTimeStats(ms);
    p.exits.push_back(e);
  }
  p.full_ms = p.exits.back().single_ms;
  {
    std::vector<double> ms;
    for (int r = 0; r < options.warmup + options.samples; ++r) {
      const torch::Tensor& x = inputs[static_cast<size_t>(r) % distinct];
      const auto a = Clock::now();
      EENN_RETURN_IF_ERROR(net.Classify(x, bundle.policy).status());
      if (r >= options.warmup) ms.push_back(Ms(a, Clock::now()));
    }
    p.eenn_ms = common::ComputeTimeStats(ms);
  }

  // Exit shares under the bundle's thresholds.
  const std::vector<std::string>& calib = calibration.empty() ? images : calibration;
  say(absl::StrCat("exit shares on ", calib.size(), " images"));
  std::map<std::string, int64_t> label_of;
  for (size_t c = 0; c < bundle.manifest.class_names.size(); ++c) {
    label_of[bundle.manifest.class_names[c]] = static_cast<int64_t>(c);
  }
  std::vector<int64_t> leave(n_exits, 0), labelled(n_exits, 0), right(n_exits, 0);
  for (size_t s = 0; s < calib.size(); s += static_cast<size_t>(options.calibration_batch)) {
    const size_t e = std::min(calib.size(), s + static_cast<size_t>(options.calibration_batch));
    std::vector<torch::Tensor> xs;
    for (size_t i = s; i < e; ++i) {
      EENN_ASSIGN_OR_RETURN(std::string b, ReadBytes(calib[i]));
      EENN_ASSIGN_OR_RETURN(torch::Tensor x, Preprocess(b, calib[i], spec));
      xs.push_back(x);
    }
    EENN_ASSIGN_OR_RETURN(std::vector<common::ExitResult> res, net.Classify(torch::cat(xs), bundle.policy));
    for (size_t i = s; i < e; ++i) {
      const common::ExitResult& r = res[i - s];
      const int g = r.exit_index;
      if (g < 0 || g >= n_exits) return absl::InternalError("classification left at no exit");
      ++leave[g];
      auto it = label_of.find(fs::path(calib[i]).parent_path().filename().string());
      if (it != label_of.end()) {
        ++labelled[g];
        if (r.class_id == it->second) ++right[g];
      }
    }
  }
  p.calibration_samples = static_cast<int64_t>(calib.size());
  for (int g = 0; g < n_exits; ++g) {
    p.exits[g].share = static_cast<double>(leave[g]) / static_cast<double>(calib.size());
    p.exits[g].accuracy = labelled[g] > 0 ? static_cast<double>(right[g]) / labelled[g] : -1.0;
  }
  return p;
}

}  // namespace eenn::tools
