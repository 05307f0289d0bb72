#include "tools/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/bundle.h"
#include "common/eenn_model.h"
#include "common/status_macros.h"
#include "common/tensor_batch.h"

namespace eenn::train {
namespace fs = std::filesystem;
using common::EarlyExitNet;
using nlohmann::json;

absl::StatusOr<TrainMode> ParseTrainMode(const std::string& name) {
  if (name == "naive") return TrainMode::kNaive;
  if (name == "end_weight") return TrainMode::kEndWeight;
  if (name == "end_join") return TrainMode::kEndJoin;
  if (name == "freeze" || name == "freeze_origin") return TrainMode::kFreeze;
  if (name == "incremental") return TrainMode::kIncremental;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown train mode '", name, "' (naive, end_weight, end_join, freeze, incremental)"));
}

std::string TrainModeName(TrainMode m) {
  switch (m) {
    case TrainMode::kNaive: return "naive";
    case TrainMode::kEndWeight: return "end_weight";
    case TrainMode::kEndJoin: return "end_join";
    case TrainMode::kFreeze: return "freeze";
    case TrainMode::kIncremental: return "incremental";
  }
  return "?";
}

namespace {

constexpr char kStateFile[] = "trainer_state.json";
constexpr char kOptimizerFile[] = "optimizer.pt";

// Which parameters learn in a stage, and which modules are frozen (eval mode,
// so their batch-norm statistics stay fixed too).
struct StagePlan {
  std::vector<torch::Tensor> trainable;
  std::vector<std::shared_ptr<torch::nn::Module>> frozen;
  int last_exit = 0;  // forward runs exits 0..last_exit
};

StagePlan PlanStage(EarlyExitNet& net, TrainMode mode, int stage) {
  StagePlan plan;
  const int g_last = net.num_exits() - 1;
  auto set_grad = [](torch::nn::Module& m, bool on) {
    for (auto& p : m.parameters()) p.set_requires_grad(on);
  };
  for (int i = 0; i < net.num_layers(); ++i) set_grad(*net.LayerModule(i), false);
  for (int g = 0; g <= g_last; ++g) set_grad(*net.HeadModule(g), false);
  auto learn = [&](torch::nn::Module& m) {
    set_grad(m, true);
    for (auto& p : m.parameters()) plan.trainable.push_back(p);
  };
  switch (mode) {
    case TrainMode::kNaive:
    case TrainMode::kEndWeight:
    case TrainMode::kEndJoin:
      for (int i = 0; i < net.num_layers(); ++i) learn(*net.LayerModule(i));
      for (int g = 0; g <= g_last; ++g) learn(*net.HeadModule(g));
      plan.last_exit = g_last;
      break;
    case TrainMode::kFreeze:
      for (int i = 0; i < net.num_layers(); ++i) plan.frozen.push_back(net.LayerModule(i));
      plan.frozen.push_back(net.HeadModule(g_last));
      for (int g = 0; g < g_last; ++g) learn(*net.HeadModule(g));
      plan.last_exit = g_last - 1;
      break;
    case TrainMode::kIncremental: {
      const int first = stage == 0 ? 0 : net.exit_layers()[stage - 1] + 1;
      for (int i = 0; i < first; ++i) plan.frozen.push_back(net.LayerModule(i));
      for (int g = 0; g < stage; ++g) plan.frozen.push_back(net.HeadModule(g));
      for (int i = first; i <= net.exit_layers()[stage]; ++i) learn(*net.LayerModule(i));
      learn(*net.HeadModule(stage));
      plan.last_exit = stage;
      break;
    }
  }
  return plan;
}

// Per-exit loss weights for an epoch (0-based count of completed epochs).
std::vector<double> ExitWeights(TrainMode mode, int num_exits, int stage, int epochs_done,
                                const std::vector<double>& custom) {
  std::vector<double> w(num_exits, 0.0);
  switch (mode) {
    case TrainMode::kNaive: w.back() = 1.0; break;
    case TrainMode::kEndWeight:
      if (custom.empty()) {
        std::fill(w.begin(), w.end(), 1.0);
      } else {
        w = custom;
      }
      break;
    case TrainMode::kEndJoin:
      for (int g = 1; g <= num_exits; ++g) {
        const double target = static_cast<double>(g) / num_exits;
        const double w0 = std::min(0.01, target);
        w[g - 1] = std::min(target, w0 + epochs_done * (target - w0) / 10.0);
      }
      break;
    case TrainMode::kFreeze: std::fill(w.begin(), w.end() - 1, 1.0); break;
    case TrainMode::kIncremental: w[stage] = 1.0; break;
  }
  return w;
}

// Weighted loss over the exits with non-zero weight; `per_exit` (optional)
// receives each exit's unweighted cross-entropy (0 for unweighted exits).
// With `distill` > 0 every early exit's term is
//   (1 - distill) * CE + distill * T^2 * KL(softmax(final / T) || softmax(exit / T)),
// the final exit's (detached) output being the teacher; the final exit keeps its
// plain cross-entropy.
torch::Tensor Loss(const std::vector<torch::Tensor>& logits, const torch::Tensor& y,
                   const std::vector<double>& w, std::vector<double>* per_exit = nullptr,
                   double distill = 0, double temperature = 1) {
  torch::Tensor loss;
  if (per_exit) per_exit->assign(w.size(), 0.0);
  torch::Tensor teacher_log_p, teacher_p;
  const size_t final_exit = w.size() - 1;
  if (distill > 0 && logits.size() == w.size()) {
    torch::NoGradGuard no_grad;
    teacher_log_p = torch::log_softmax(logits[final_exit].detach() / temperature, 1);
    teacher_p = teacher_log_p.exp();
  }
  for (size_t g = 0; g < logits.size(); ++g) {
    if (w[g] == 0.0) continue;
    torch::Tensor ce = torch::cross_entropy_loss(logits[g], y);
    if (per_exit) (*per_exit)[g] = ce.item<double>();
    torch::Tensor term = ce;
    if (teacher_p.defined() && g != final_exit) {
      torch::Tensor student_log_p = torch::log_softmax(logits[g] / temperature, 1);
      torch::Tensor kl = (teacher_p * (teacher_log_p - student_log_p)).sum(1).mean();
      term = ce * (1 - distill) + kl * (distill * temperature * temperature);
    }
    torch::Tensor l = term * w[g];
    loss = loss.defined() ? loss + l : l;
  }
  return loss;
}

double CosineBetween(double from, double to, double p) {
  return to + (from - to) * 0.5 * (1.0 + std::cos(M_PI * std::clamp(p, 0.0, 1.0)));
}

// Learning rate at step `t` of `total` in a stage (plateau handled per epoch).
double ScheduledLr(const TrainOptions& o, double plateau_lr, int64_t t, int64_t total) {
  if (o.scheduler == "onecycle") {
    const double init = o.lr / 25.0, final_lr = init / 1e4;
    const int64_t up = std::max<int64_t>(1, static_cast<int64_t>(0.3 * total));
    if (t < up) return CosineBetween(init, o.lr, static_cast<double>(t) / up);
    return CosineBetween(o.lr, final_lr, static_cast<double>(t - up) / std::max<int64_t>(1, total - up));
  }
  if (o.scheduler == "cosine") return CosineBetween(o.lr, 0.0, static_cast<double>(t) / total);
  if (o.scheduler == "plateau") return plateau_lr;
  return o.lr;
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const TrainOptions& o,
                                                       const std::vector<torch::Tensor>& params) {
  if (o.optim == "adam") {
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(o.lr).weight_decay(o.decay));
  }
  return std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(o.lr)
                  .momentum(o.momentum)
                  .weight_decay(o.decay)
                  .nesterov(o.nesterov && o.momentum > 0));
}

void SetLr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) group.options().set_lr(lr);
}

struct TrainerState {
  int epochs_done = 0;
  double plateau_lr = 0;
  double plateau_best = std::numeric_limits<double>::infinity();
  int plateau_bad = 0;
};

// Where a run stopped inside epoch epochs_done + 1: the steps done, the
// epoch's random state after them and its running sums, so that a resume
// continues from the next step as if never stopped.
struct EpochPosition {
  int64_t step = 0;   // steps of the epoch done
  int64_t steps = 0;  // steps per epoch of the run that stopped
  std::string rng;    // std::mt19937_64 state (augmentation)
  std::string torch_rng;  // LibTorch's default CPU generator state, hex
  double loss_sum = 0;
  int64_t seen = 0;
  std::vector<double> exit_sum;
};

// LibTorch's CPU generator state as lowercase hex, and back (DataLoss for text
// that is not such hex; the generator checks the length).
std::string GeneratorStateHex(const torch::Tensor& state) {
  const torch::Tensor b = state.contiguous();
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(b.data_ptr<uint8_t>()), static_cast<size_t>(b.numel())));
}

absl::StatusOr<torch::Tensor> GeneratorStateFromHex(const std::string& hex) {
  if (hex.size() % 2 != 0 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::DataLossError("random state is not hex");
  }
  std::string bytes = absl::HexStringToBytes(hex);
  return torch::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size())}, torch::kUInt8).clone();
}

json OptionsJson(const TrainOptions& o) {
  return {{"architecture", o.spec.architecture},
          {"variant", std::string(common::VariantName(o.spec.variant))},
          {"width", o.spec.width},
          {"num_classes", o.spec.num_classes},
          {"exit_layers", o.spec.exit_layers},
          {"exit_pool", o.spec.exit_pool},
          {"train_mode", TrainModeName(o.mode)},
          {"exit_weights", o.exit_weights},
          {"distill", o.distill},
          {"distill_temperature", o.distill_temperature},
          {"epochs", o.epochs},
          {"batch", o.batch},
          {"optim", o.optim},
          {"lr", o.lr},
          {"momentum", o.momentum},
          {"decay", o.decay},
          {"scheduler", o.scheduler},
          {"val_ratio", o.val_ratio},
          {"subset_ratio", o.subset_ratio},
          {"seed", o.seed}};
}

// Puts every 4-d parameter and buffer (convolution weights) in channels-last
// order. oneDNN's convolutions run faster on NHWC activations; with NHWC
// weights and inputs the whole forward and backward pass stays NHWC (the
// gradients and optimizer state follow the parameters' layout). Bundles are
// written contiguous, so this never reaches the files.
void ToChannelsLast(torch::nn::Module& m) {
  for (auto& p : m.parameters()) {
    if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
  }
  for (auto& b : m.buffers()) {
    if (b.dim() == 4) b.set_data(b.data().contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

torch::Tensor ToInputFormat(const torch::Tensor& x, bool channels_last) {
  return channels_last ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
}

// Evaluates every exit on `indices`: (loss under `w`, accuracy per exit).
std::pair<double, std::vector<double>> Evaluate(EarlyExitNet& net, const common::ImageDataset& data,
                                                const std::vector<int64_t>& indices,
                                                const common::InputSpec& input,
                                                const std::vector<double>& w,
                                                const torch::Device& device,
                                                bool channels_last) {
  net.eval();
  torch::NoGradGuard no_grad;
  std::vector<int64_t> correct(net.num_exits(), 0);
  double loss_sum = 0;
  std::mt19937_64 rng(0);
  const size_t chunk = 500;
  for (size_t s = 0; s < indices.size(); s += chunk) {
    std::vector<int64_t> idx(indices.begin() + s, indices.begin() + std::min(indices.size(), s + chunk));
    auto [xc, yc] = common::MakeBatch(data, idx, input, {}, rng);
    torch::Tensor x = ToInputFormat(xc.to(device), channels_last), y = yc.to(device);
    std::vector<torch::Tensor> logits = net.ForwardExits(x, net.num_exits() - 1);
    torch::Tensor l = Loss(logits, y, w);
    if (l.defined()) loss_sum += l.item<double>() * idx.size();
    for (int g = 0; g < net.num_exits(); ++g) {
      correct[g] += logits[g].argmax(1).eq(y).sum().item<int64_t>();
    }
  }
  std::vector<double> acc;
  for (int64_t c : correct) acc.push_back(indices.empty() ? 0.0 : double(c) / indices.size());
  return {indices.empty() ? 0.0 : loss_sum / indices.size(), acc};
}

// Copies the backbone and final classifier of the bundle in `dir`. A bundle
// that eenn-train made records its train/validation split (seed, val_ratio,
// subset_ratio):
// continuing with another split would put the pretrained model's training
// images into this run's validation split (and into calibration), so that is
// refused.
absl::Status CopyPretrained(EarlyExitNet& net, const std::string& dir, const TrainOptions& o) {
  EENN_ASSIGN_OR_RETURN(common::Bundle pre, common::LoadBundle(dir));
  const json meta = json::parse(pre.manifest.metadata_json, nullptr, false);
  if (o.val_ratio > 0 && !meta.is_discarded() && meta.contains("options") && meta["options"].is_object()) {
    const json& po = meta["options"];
    const int64_t seed = po.value("seed", static_cast<int64_t>(o.seed));
    const double val_ratio = po.value("val_ratio", o.val_ratio);
    const double subset_ratio = common::RecordedSubsetRatio(pre.manifest.metadata_json);
    if (seed != static_cast<int64_t>(o.seed) || val_ratio != o.val_ratio || subset_ratio != o.subset_ratio) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pretrained bundle '", dir, "' was trained with --seed ", seed, " --val_ratio ", val_ratio,
          " --subset_ratio ", subset_ratio, "; this run uses --seed ", o.seed, " --val_ratio ", o.val_ratio,
          " --subset_ratio ", o.subset_ratio,
          ", so its validation split would contain images the pretrained model trained on. Use --seed ",
          seed, " --val_ratio ", val_ratio, " --subset_ratio ", subset_ratio));
    }
  }
  if (pre.model->num_layers() != net.num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("pretrained bundle '", dir, "' has ",
                                                   pre.model->num_layers(), " layers, model has ",
                                                   net.num_layers()));
  }
  std::map<std::string, torch::Tensor> src;
  for (auto& [n, t] : pre.model->StateDict()) src.emplace(n, t);
  const std::string final_gate = absl::StrCat("gates.", net.num_layers() - 1, ".");
  torch::NoGradGuard no_grad;
  int copied = 0;
  for (auto& [name, t] : net.StateDict()) {
    const bool wanted = name.rfind("backbone.", 0) == 0 || name.rfind(final_gate, 0) == 0;
    if (!wanted) continue;
    auto it = src.find(name);
    if (it == src.end() || !it->second.sizes().equals(t.sizes())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pretrained bundle '", dir, "' does not fit: tensor '", name, "' missing or mis-shaped"));
    }
    t.copy_(it->second);
    ++copied;
  }
  std::fprintf(stderr, "eenn-train: %d tensors from pretrained bundle %s\n", copied, dir.c_str());
  return absl::OkStatus();
}

absl::Status CopyWeights(EarlyExitNet& dst, const EarlyExitNet& src) {
  auto s = src.StateDict();
  auto d = dst.StateDict();
  if (s.size() != d.size()) return absl::FailedPreconditionError("checkpoint does not fit the model");
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i].first != d[i].first || !s[i].second.sizes().equals(d[i].second.sizes())) {
      return absl::FailedPreconditionError(absl::StrCat("checkpoint tensor '", s[i].first,
                                                        "' does not fit the model"));
    }
    d[i].second.copy_(s[i].second);
  }
  return absl::OkStatus();
}

std::string Duration(double s) {
  const int t = static_cast<int>(s + 0.5);
  return t >= 3600 ? absl::StrFormat("%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60)
                   : absl::StrFormat("%d:%02d", t / 60, t % 60);
}

}  // namespace

absl::StatusOr<TrainReport> Train(const TrainOptions& o, const common::ImageDataset& data,
                                  const std::function<void(const EpochStats&)>& on_epoch) {
  if (o.out.empty()) return absl::InvalidArgumentError("an output bundle directory is required");
  if (o.epochs < 1 || o.batch < 1) return absl::InvalidArgumentError("epochs and batch must be >= 1");
  if (!(o.lr > 0)) return absl::InvalidArgumentError("learning rate must be positive");
  if (o.optim != "sgd" && o.optim != "adam") {
    return absl::InvalidArgumentError(absl::StrCat("unknown optimiser '", o.optim, "' (sgd or adam)"));
  }
  if (o.scheduler != "none" && o.scheduler != "plateau" && o.scheduler != "cosine" &&
      o.scheduler != "onecycle") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown scheduler '", o.scheduler, "' (none, plateau, cosine, onecycle)"));
  }
  if (!(o.val_ratio >= 0 && o.val_ratio < 1)) return absl::InvalidArgumentError("val ratio must be in [0, 1)");
  if (o.mode == TrainMode::kFreeze && o.pretrained.empty()) {
    return absl::InvalidArgumentError("train mode 'freeze' needs --pretrained (a trained bundle)");
  }
  if (data.class_names.size() != static_cast<size_t>(o.spec.num_classes)) {
    return absl::InvalidArgumentError(absl::StrCat("dataset has ", data.class_names.size(),
                                                   " classes, model ", o.spec.num_classes));
  }
  EENN_RETURN_IF_ERROR(common::CheckDatasetFitsInput(data, o.input));

  torch::manual_seed(o.seed);  // initialisation is a function of the seed
  EENN_ASSIGN_OR_RETURN(std::shared_ptr<EarlyExitNet> net, EarlyExitNet::Create(o.spec));
  if (o.mode == TrainMode::kNaive && net->num_exits() != 1) {
    return absl::InvalidArgumentError("train mode 'naive' trains a plain model: give no --ee exits");
  }
  if (!o.exit_weights.empty()) {
    if (o.mode != TrainMode::kEndWeight) {
      return absl::InvalidArgumentError("exit weights apply to train mode 'end_weight' only");
    }
    if (o.exit_weights.size() != static_cast<size_t>(net->num_exits())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "exit weights: ", o.exit_weights.size(), " given for ", net->num_exits(),
          " exits (one per --ee layer, then the final classifier)"));
    }
    for (double v : o.exit_weights) {
      if (!(v >= 0 && std::isfinite(v))) {
        return absl::InvalidArgumentError("exit weights must be finite and non-negative");
      }
    }
    if (o.exit_weights.back() <= 0) {
      return absl::InvalidArgumentError("the final classifier's exit weight must be positive");
    }
  }
  if (!(o.distill >= 0 && o.distill <= 1)) {
    return absl::InvalidArgumentError("distill must lie in [0, 1]");
  }
  if (!(o.distill_temperature > 0 && std::isfinite(o.distill_temperature))) {
    return absl::InvalidArgumentError("distill temperature must be positive");
  }
  if (o.distill > 0 && (o.mode == TrainMode::kNaive || o.mode == TrainMode::kIncremental)) {
    return absl::InvalidArgumentError(
        "distill needs the final exit's output while early exits train: train mode end_weight, "
        "end_join or freeze");
  }
  if ((o.mode == TrainMode::kFreeze) && net->num_exits() < 2) {
    return absl::InvalidArgumentError("train mode 'freeze' needs early exits (--ee)");
  }
  if (net->input_shape() != o.input.shape) {
    return absl::InvalidArgumentError("input shape does not match the architecture");
  }
  if (!o.pretrained.empty()) EENN_RETURN_IF_ERROR(CopyPretrained(*net, o.pretrained, o));
  torch::Device device(torch::kCPU);
  if (o.cuda && torch::cuda::is_available()) device = torch::Device(torch::kCUDA);
  net->to(device);
  if (o.channels_last) ToChannelsLast(*net);

  const std::string ckpt_dir = o.checkpoint_dir.empty() ? (fs::path(o.out) / "checkpoint").string()
                                                        : o.checkpoint_dir;
  const int stages = o.mode == TrainMode::kIncremental ? net->num_exits() : 1;
  const int total_epochs = o.epochs * stages;
  TrainerState state;
  state.plateau_lr = o.lr;
  std::string resume_optimizer;
  std::optional<EpochPosition> resume_position;
  if (!o.resume.empty()) {
    // A run stopped between the two renames of a checkpoint swap left it as <dir>.old.
    std::string resume_dir = o.resume;
    if (!fs::exists(resume_dir) && fs::exists(resume_dir + ".old")) resume_dir += ".old";
    EENN_ASSIGN_OR_RETURN(common::Bundle ck, common::LoadBundle(resume_dir));
    EENN_RETURN_IF_ERROR(CopyWeights(*net, *ck.model));
    std::ifstream in(fs::path(resume_dir) / kStateFile);
    json js = json::parse(in, nullptr, false);
    if (js.is_discarded() || !js.contains("epochs_done")) {
      return absl::DataLossError(absl::StrCat("checkpoint '", resume_dir, "' has no valid ", kStateFile));
    }
    if (js["options"]["train_mode"] != TrainModeName(o.mode) ||
        js["options"]["architecture"] != o.spec.architecture) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint '", o.resume, "' was made with mode ", js["options"]["train_mode"].dump(),
          " and architecture ", js["options"]["architecture"].dump()));
    }
    // The split has to be the same: otherwise the epochs before and after the
    // resume would train on each other's validation images.
    const json& co = js["options"];
    const int64_t seed = co.value("seed", static_cast<int64_t>(o.seed));
    const double val_ratio = co.value("val_ratio", o.val_ratio);
    const double subset_ratio = common::RecordedSubsetRatio(js.dump());
    if (seed != static_cast<int64_t>(o.seed) || val_ratio != o.val_ratio || subset_ratio != o.subset_ratio) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint '", o.resume, "' was made with --seed ", seed, " --val_ratio ", val_ratio,
          " --subset_ratio ", subset_ratio, "; this run uses --seed ", o.seed, " --val_ratio ", o.val_ratio,
          " --subset_ratio ", o.subset_ratio, " (resume with the same split)"));
    }
    state.epochs_done = js["epochs_done"];
    state.plateau_lr = js["plateau_lr"];
    state.plateau_best = js["plateau_best"].is_null() ? std::numeric_limits<double>::infinity()
                                                      : js["plateau_best"].get<double>();
    state.plateau_bad = js["plateau_bad"];
    resume_optimizer = (fs::path(resume_dir) / kOptimizerFile).string();
    if (js.contains("position")) {
      const json& jp = js["position"];
      EpochPosition pos;
      try {
        pos.step = jp.at("step").get<int64_t>();
        pos.steps = jp.at("steps").get<int64_t>();
        pos.rng = jp.at("rng").get<std::string>();
        pos.torch_rng = jp.at("torch_rng").get<std::string>();
        pos.loss_sum = jp.at("loss_sum").get<double>();
        pos.seen = jp.at("seen").get<int64_t>();
        pos.exit_sum = jp.at("exit_sum").get<std::vector<double>>();
      } catch (const json::exception& e) {
        return absl::DataLossError(
            absl::StrCat("checkpoint '", resume_dir, "' has an unreadable position in ", kStateFile, ": ", e.what()));
      }
      resume_position = std::move(pos);
      std::fprintf(stderr, "eenn-train: resuming epoch %d of %d after step %lld\n", state.epochs_done + 1,
                   total_epochs, static_cast<long long>(resume_position->step));
    } else {
      std::fprintf(stderr, "eenn-train: resuming after epoch %d of %d\n", state.epochs_done, total_epochs);
    }
  }

  auto [train_idx, val_idx] = common::SplitIndices(data.labels, o.val_ratio, o.seed);
  if (train_idx.empty()) return absl::InvalidArgumentError("no training samples left after the split");
  int64_t steps = (static_cast<int64_t>(train_idx.size()) + o.batch - 1) / o.batch;
  if (o.max_steps_per_epoch > 0) steps = std::min<int64_t>(steps, o.max_steps_per_epoch);
  if (resume_position &&
      (resume_position->steps != steps || resume_position->step <= 0 || resume_position->step >= steps ||
       resume_position->seen < 0 || static_cast<int>(resume_position->exit_sum.size()) != net->num_exits())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint '", o.resume, "' stopped after step ", resume_position->step, " of ", resume_position->steps,
        " of an epoch with ", resume_position->exit_sum.size(), " exits; this run has ", steps,
        " steps per epoch and ", net->num_exits(), " exits (resume with the same --batch and --max_steps)"));
  }

  std::error_code ec;
  fs::create_directories(o.out, ec);
  const std::string log_path = (fs::path(o.out) / "train_log.jsonl").string();
  if (!o.resume.empty() && fs::exists(log_path)) {
    // Epochs logged after the checkpoint resumed from (a run stopped between an
    // epoch's log line and its checkpoint) run again: drop their lines.
    std::ifstream old_log(log_path);
    std::string line, kept;
    while (std::getline(old_log, line)) {
      const json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("epoch") && j["epoch"].is_number() &&
          j["epoch"].get<int>() > state.epochs_done) {
        continue;
      }
      kept += line + "\n";
    }
    old_log.close();
    std::ofstream(log_path, std::ios::trunc) << kept;
  }
  std::ofstream log(log_path, std::ios::app);
  common::BundleManifest manifest = common::DefaultManifest(*net, o.model_name, o.model_version);
  manifest.class_names = data.class_names;
  manifest.input = o.input;
  for (size_t g = 0; g + 1 < manifest.thresholds.size(); ++g) manifest.thresholds[g] = 0.9f;

  TrainReport report;
  std::unique_ptr<torch::optim::Optimizer> opt;
  StagePlan plan;
  int plan_stage = -1;
  const common::Augment augment{o.crop_padding, o.hflip};
  // Checkpoint: a loadable bundle plus optimizer and trainer state (and, for a
  // stop inside an epoch, the epoch's position), written beside the previous
  // one and swapped in whole.
  auto save_checkpoint = [&](const EpochPosition* pos) -> absl::Status {
    manifest.metadata_json =
        json({{"checkpoint_epoch", state.epochs_done}, {"options", OptionsJson(o)}}).dump();
    const std::string partial = ckpt_dir + ".partial", previous = ckpt_dir + ".old";
    std::error_code ec;
    fs::remove_all(partial, ec);
    EENN_RETURN_IF_ERROR(common::SaveBundle(partial, manifest, *net));
    try {
      torch::save(*opt, (fs::path(partial) / kOptimizerFile).string());
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("saving optimizer state: ", e.what_without_backtrace()));
    }
    json js = {{"epochs_done", state.epochs_done},
               {"plateau_lr", state.plateau_lr},
               {"plateau_best", std::isfinite(state.plateau_best) ? json(state.plateau_best) : json()},
               {"plateau_bad", state.plateau_bad},
               {"options", OptionsJson(o)}};
    if (pos != nullptr) {
      js["position"] = {{"step", pos->step},         {"steps", pos->steps},   {"rng", pos->rng},
                        {"torch_rng", pos->torch_rng}, {"loss_sum", pos->loss_sum}, {"seen", pos->seen},
                        {"exit_sum", pos->exit_sum}};
    }
    {
      std::ofstream state_out(fs::path(partial) / kStateFile);
      state_out << js.dump(2) << "\n";
      state_out.flush();
      if (!state_out) return absl::InternalError(absl::StrCat("writing ", partial, "/", kStateFile));
    }
    fs::remove_all(previous, ec);
    if (fs::exists(ckpt_dir)) fs::rename(ckpt_dir, previous, ec);
    if (!ec) fs::rename(partial, ckpt_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("replacing checkpoint ", ckpt_dir, ": ", ec.message()));
    fs::remove_all(previous, ec);
    return absl::OkStatus();
  };
  int64_t run_steps = 0;
  for (int epoch = state.epochs_done; epoch < total_epochs; ++epoch) {
    const int stage = epoch / o.epochs;
    const int epoch_in_stage = epoch % o.epochs;
    if (stage != plan_stage) {
      plan = PlanStage(*net, o.mode, stage);
      opt = MakeOptimizer(o, plan.trainable);
      plan_stage = stage;
      // A resumed run continues the optimizer it saved, unless the checkpoint
      // ended exactly at a stage boundary (incremental: a fresh optimizer per stage).
      if (!resume_optimizer.empty() && (stages == 1 || epoch_in_stage != 0 || resume_position)) {
        try {
          torch::load(*opt, resume_optimizer);
        } catch (const c10::Error& e) {
          return absl::DataLossError(absl::StrCat("cannot load optimizer state '", resume_optimizer,
                                                  "': ", e.what_without_backtrace()));
        }
        resume_optimizer.clear();
      }
    }
    const std::vector<double> w = ExitWeights(o.mode, net->num_exits(), stage, epoch, o.exit_weights);

    // Deterministic per-epoch order, augmentation and dropout.
    std::mt19937_64 rng(o.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    torch::manual_seed(o.seed * 7919ULL + static_cast<uint64_t>(epoch));
    std::vector<int64_t> order = train_idx;
    std::shuffle(order.begin(), order.end(), rng);

    net->train();
    for (auto& m : plan.frozen) m->eval();
    const auto t0 = std::chrono::steady_clock::now();
    auto last_print = t0;
    double loss_sum = 0;
    int64_t seen = 0;
    std::vector<double> exit_sum(net->num_exits(), 0.0), exit_step;
    int64_t first_step = 0;
    if (resume_position) {
      // Continue the epoch the checkpoint stopped in: the same order (drawn
      // above), then the random state and running sums after its last step.
      std::istringstream rng_in(resume_position->rng);
      rng_in >> rng;
      if (!rng_in) return absl::DataLossError(absl::StrCat("checkpoint '", o.resume, "': unreadable random state"));
      EENN_ASSIGN_OR_RETURN(torch::Tensor gen_state, GeneratorStateFromHex(resume_position->torch_rng));
      try {
        at::Generator gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(gen_state);
      } catch (const c10::Error& e) {
        return absl::DataLossError(absl::StrCat("checkpoint '", o.resume, "': LibTorch random state: ",
                                                e.what_without_backtrace()));
      }
      first_step = resume_position->step;
      loss_sum = resume_position->loss_sum;
      seen = resume_position->seen;
      exit_sum = resume_position->exit_sum;
      resume_position.reset();
    }
    const int64_t seen_before = seen;
    // Throughput after the first steps of the epoch, which pay one-time costs
    // (oneDNN kernel generation, allocator growth).
    constexpr int64_t kWarmupSteps = 3;
    auto steady_t0 = t0;
    int64_t steady_seen = 0;
    for (int64_t s = first_step; s < steps; ++s) {
      if ((o.stop != nullptr && o.stop->load()) || (o.stop_after_steps > 0 && run_steps >= o.stop_after_steps)) {
        if (o.progress) std::fprintf(stderr, "\n");
        if (s > first_step) {
          EpochPosition pos;
          pos.step = s;
          pos.steps = steps;
          std::ostringstream rng_out;
          rng_out << rng;
          pos.rng = rng_out.str();
          {
            // Dropout's generator on CPU. (A CUDA run draws dropout from the
            // CUDA generator, which is not saved: there the resumed epoch's
            // dropout masks differ.)
            at::Generator gen = at::detail::getDefaultCPUGenerator();
            std::lock_guard<std::mutex> lock(gen.mutex());
            pos.torch_rng = GeneratorStateHex(gen.get_state());
          }
          pos.loss_sum = loss_sum;
          pos.seen = seen;
          pos.exit_sum = exit_sum;
          EENN_RETURN_IF_ERROR(save_checkpoint(&pos));
          return absl::CancelledError(absl::StrCat("stopped in epoch ", epoch + 1, " after ", s, " of ", steps,
                                                   " steps; checkpoint saved at that step, resume with --resume ",
                                                   ckpt_dir));
        }
        if (first_step > 0) {
          return absl::CancelledError(absl::StrCat("stopped in epoch ", epoch + 1, " after ", s, " of ", steps,
                                                   " steps; the checkpoint at that step stays, resume with --resume ",
                                                   ckpt_dir));
        }
        return absl::CancelledError(
            state.epochs_done > 0
                ? absl::StrCat("stopped in epoch ", epoch + 1, " after ", s, " of ", steps,
                               " steps; resume after epoch ", state.epochs_done, " with --resume ", ckpt_dir)
                : absl::StrCat("stopped in epoch ", epoch + 1, " after ", s, " of ", steps,
                               " steps, before the first checkpoint"));
      }
      const size_t begin = static_cast<size_t>(s * o.batch);
      std::vector<int64_t> idx(order.begin() + begin,
                               order.begin() + std::min(order.size(), begin + o.batch));
      auto [xc, yc] = common::MakeBatch(data, idx, o.input, augment, rng);
      torch::Tensor x = ToInputFormat(xc.to(device), o.channels_last), y = yc.to(device);
      SetLr(*opt, ScheduledLr(o, state.plateau_lr, epoch_in_stage * steps + s, o.epochs * steps));
      opt->zero_grad();
      // Distillation needs the final exit's output as the teacher, also where it does not learn.
      const int last_exit = o.distill > 0 ? net->num_exits() - 1 : plan.last_exit;
      torch::Tensor loss = Loss(net->ForwardExits(x, last_exit), y, w, &exit_step, o.distill,
                                o.distill_temperature);
      loss.backward();
      opt->step();
      loss_sum += loss.item<double>() * idx.size();
      for (size_t g = 0; g < exit_step.size(); ++g) exit_sum[g] += exit_step[g] * idx.size();
      seen += static_cast<int64_t>(idx.size());
      ++run_steps;
      const auto now = std::chrono::steady_clock::now();
      if (s + 1 - first_step == kWarmupSteps) steady_t0 = now;
      if (s + 1 - first_step > kWarmupSteps) steady_seen += static_cast<int64_t>(idx.size());
      if (o.progress && (std::chrono::duration<double>(now - last_print).count() > 1.0 || s + 1 == steps)) {
        last_print = now;
        const double el = std::chrono::duration<double>(now - t0).count();
        const double ips = (seen - seen_before) / std::max(el, 1e-9);
        const double eta = (steps - s - 1) * double(o.batch) / std::max(ips, 1e-9);
        std::fprintf(stderr, "\r[epoch %d/%d] %6lld/%lld  %6.0f img/s  ETA %s  loss %.4f   ",
                     epoch + 1, total_epochs, static_cast<long long>(seen),
                     static_cast<long long>(std::min<int64_t>(steps * o.batch, order.size())), ips,
                     Duration(eta).c_str(), loss_sum / seen);
        std::fflush(stderr);
      }
    }
    const auto train_end = std::chrono::steady_clock::now();
    const double train_s = std::chrono::duration<double>(train_end - t0).count();

    EpochStats st;
    st.epoch = epoch + 1;
    st.stage = stage;
    st.train_loss = loss_sum / std::max<int64_t>(seen, 1);
    for (double v : exit_sum) st.exit_train_loss.push_back(v / std::max<int64_t>(seen, 1));
    st.lr = opt->param_groups()[0].options().get_lr();
    st.images_per_s = (seen - seen_before) / std::max(train_s, 1e-9);
    st.images_per_s_steady =
        steady_seen > 0
            ? steady_seen / std::max(std::chrono::duration<double>(train_end - steady_t0).count(), 1e-9)
            : st.images_per_s;
    std::tie(st.val_loss, st.val_accuracy) = Evaluate(*net, data, val_idx, o.input, w, device, o.channels_last);
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o.scheduler == "plateau" && !val_idx.empty()) {
      if (st.val_loss < state.plateau_best * (1 - o.plateau_threshold)) {
        state.plateau_best = st.val_loss;
        state.plateau_bad = 0;
      } else if (++state.plateau_bad > o.plateau_patience) {
        state.plateau_lr = std::max(state.plateau_lr * o.plateau_factor, o.min_lr);
        state.plateau_bad = 0;
      }
    }
    state.epochs_done = epoch + 1;

    std::string accs;
    for (size_t g = 0; g < st.val_accuracy.size(); ++g) {
      absl::StrAppendFormat(&accs, "%s%s %.2f%%", g ? ", " : "",
                            g + 1 == st.val_accuracy.size() ? "final"
                                                            : absl::StrCat("exit@", net->exit_layers()[g]),
                            100 * st.val_accuracy[g]);
    }
    std::fprintf(stderr, "\repoch %d/%d: train loss %.4f, val loss %.4f, val acc [%s], lr %.5f, %.0f img/s, %s\n",
                 st.epoch, total_epochs, st.train_loss, st.val_loss, accs.c_str(), st.lr,
                 st.images_per_s, Duration(st.seconds).c_str());
    json line = {{"epoch", st.epoch},         {"stage", st.stage},
                 {"train_loss", st.train_loss}, {"val_loss", st.val_loss},
                 {"val_accuracy", st.val_accuracy}, {"exit_layers", net->exit_layers()},
                 {"exit_train_loss", st.exit_train_loss},
                 {"lr", st.lr},               {"images_per_s", st.images_per_s},
                 {"images_per_s_steady", st.images_per_s_steady},
                 {"seconds", st.seconds}};
    log << line.dump() << "\n";
    log.flush();

    EENN_RETURN_IF_ERROR(save_checkpoint(nullptr));
    report.epochs.push_back(st);
    if (on_epoch) on_epoch(st);
    if (o.stop_after_epochs > 0 && static_cast<int>(report.epochs.size()) >= o.stop_after_epochs) break;
  }

  net->eval();
  json meta = {{"trained_by", "eenn-train"},
               {"command", o.command_line},
               {"options", OptionsJson(o)},
               {"epochs_done", state.epochs_done},
               {"calibrated", false}};
  if (!report.epochs.empty()) meta["final_val_accuracy"] = report.epochs.back().val_accuracy;
  manifest.metadata_json = meta.dump();
  EENN_RETURN_IF_ERROR(common::SaveBundle(o.out, manifest, *net));
  report.bundle_dir = o.out;
  return report;
}

}  // namespace eenn::train
