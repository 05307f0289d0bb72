// eenn-train: trains a zoo backbone and its exits and writes a model bundle.
//
//   eenn-train --dataset folder --data_dir ../shared/datasets/cifar10
//     --model resnet18 --width 0.5 --ee 5,7,9 --train_mode end_join
//     --epochs 15 --batch 128 --lr 0.1 --scheduler onecycle --out models/x
#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "common/dataset.h"
#include "common/threads.h"
#include "tools/train/trainer.h"

ABSL_FLAG(std::string, dataset, "folder",
          "Dataset format: folder (<dir>/<split>/<class>/<image>), cifar10-bin, mnist, fashion-mnist.");
ABSL_FLAG(std::string, data_dir, "", "Dataset root directory.");
ABSL_FLAG(int, num_classes, 0, "Number of classes (0 = from the dataset).");
ABSL_FLAG(std::string, model, "resnet18", "Zoo architecture (resnet18/34/50/101, vgg11..19[_bn]).");
ABSL_FLAG(std::string, variant, "cifar", "Input variant: cifar (32x32) or imagenet (224x224).");
ABSL_FLAG(double, width, 1.0, "Channel width multiplier.");
ABSL_FLAG(std::string, ee, "", "Comma-separated exit layer indices (the final layer is implied).");
ABSL_FLAG(std::string, pretrained, "", "Bundle whose backbone and final classifier to start from.");
ABSL_FLAG(int, epochs, 30, "Epochs (per exit in incremental mode).");
ABSL_FLAG(int, batch, 128, "Batch size.");
ABSL_FLAG(double, lr, 0.1, "Peak learning rate.");
ABSL_FLAG(std::string, optim, "sgd", "sgd or adam.");
ABSL_FLAG(double, momentum, 0.9, "SGD momentum.");
ABSL_FLAG(double, decay, 5e-4, "Weight decay.");
ABSL_FLAG(std::string, scheduler, "onecycle", "none, plateau (ReduceLROnPlateau on val loss), cosine, onecycle.");
ABSL_FLAG(int, patience, 3, "plateau: epochs without improvement before the LR drops.");
ABSL_FLAG(double, factor, 0.1, "plateau: LR multiplier.");
ABSL_FLAG(std::string, train_mode, "end_join", "naive, end_weight, end_join, freeze, incremental.");
ABSL_FLAG(std::string, exit_weights, "",
          "end_weight: comma-separated loss weight per exit, the final classifier's last "
          "(default 1 each).");
ABSL_FLAG(int, exit_pool, 1,
          "Early exits average-pool to exit_pool x exit_pool before their classifier (1 = global "
          "pooling, as the reference; 2 or 4 keep coarse spatial layout for shallow exits).");
ABSL_FLAG(double, distill, 0,
          "Self-distillation: share of each early exit's loss that matches the final exit's "
          "softened output (0 = cross-entropy only; end_weight, end_join, freeze).");
ABSL_FLAG(double, distill_temperature, 3, "Softmax temperature of --distill.");
ABSL_FLAG(int, seed, 0, "Seed for splits, order, augmentation and initialisation.");
ABSL_FLAG(std::string, resume, "", "Checkpoint directory to continue from (<out>/checkpoint).");
ABSL_FLAG(double, subset_ratio, 1.0, "Train on this share of each class.");
ABSL_FLAG(double, val_ratio, 0.1, "Share of the training data held out for validation.");
ABSL_FLAG(bool, cuda, false, "Train on CUDA when this LibTorch has it.");
ABSL_FLAG(bool, augment, true, "Random crop (padding 4) and horizontal flip.");
ABSL_FLAG(bool, channels_last, true,
          "Train with channels-last (NHWC) tensors, faster with oneDNN on CPU; bundles are the same "
          "either way.");
ABSL_FLAG(int, threads, 0, "LibTorch threads (0 = all cores).");
ABSL_FLAG(int, max_steps, 0, "Cap on steps per epoch (smoke runs).");
ABSL_FLAG(std::string, name, "eenn-model", "Model name written to the bundle.");
ABSL_FLAG(std::string, version, "1", "Model version written to the bundle.");
ABSL_FLAG(std::string, out, "", "Output bundle directory.");

namespace {
int Fail(const absl::Status& s) {
  std::cerr << "eenn-train: " << s << "\n";
  return 2;
}
// SIGINT / SIGTERM: stop between two steps, checkpointed at that step;
// a second one ends the process at once (SA_RESETHAND restores the default).
std::atomic<bool> g_stop{false};

void OnStopSignal(int) {
  g_stop.store(true);
  constexpr char kMsg[] =
      "\neenn-train: stopping after this step (checkpointed there); again to quit now\n";
  (void)!write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
}

void InstallStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}
}  // namespace

int main(int argc, char** argv) {
  std::string command = absl::StrJoin(argv, argv + argc, " ");
  eenn::common::ParseFlags(argc, argv,
      "Train an early-exit network and write a bundle.");
  if (absl::GetFlag(FLAGS_out).empty() || absl::GetFlag(FLAGS_data_dir).empty()) {
    std::cerr << "eenn-train: --data_dir and --out are required (see --help)\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_cuda) && !torch::cuda::is_available()) {
    std::cerr << "eenn-train: --cuda given but this LibTorch has no CUDA device; training on CPU\n";
  }
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) return Fail(s);

  eenn::train::TrainOptions o;
  o.command_line = command;
  auto mode = eenn::train::ParseTrainMode(absl::GetFlag(FLAGS_train_mode));
  if (!mode.ok()) return Fail(mode.status());
  o.mode = *mode;
  auto variant = eenn::common::ParseVariant(absl::GetFlag(FLAGS_variant));
  if (!variant.ok()) return Fail(variant.status());
  o.spec.architecture = absl::GetFlag(FLAGS_model);
  o.spec.variant = *variant;
  o.spec.width = absl::GetFlag(FLAGS_width);
  o.spec.exit_pool = absl::GetFlag(FLAGS_exit_pool);
  for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_ee), ',', absl::SkipEmpty())) {
    int v;
    if (!absl::SimpleAtoi(t, &v)) return Fail(absl::InvalidArgumentError(absl::StrCat("bad exit layer '", t, "'")));
    o.spec.exit_layers.push_back(v);
  }
  for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_exit_weights), ',', absl::SkipEmpty())) {
    double v;
    if (!absl::SimpleAtod(t, &v)) return Fail(absl::InvalidArgumentError(absl::StrCat("bad exit weight '", t, "'")));
    o.exit_weights.push_back(v);
  }
  o.distill = absl::GetFlag(FLAGS_distill);
  o.distill_temperature = absl::GetFlag(FLAGS_distill_temperature);
  o.epochs = absl::GetFlag(FLAGS_epochs);
  o.batch = absl::GetFlag(FLAGS_batch);
  o.lr = absl::GetFlag(FLAGS_lr);
  o.optim = absl::GetFlag(FLAGS_optim);
  o.momentum = absl::GetFlag(FLAGS_momentum);
  o.decay = absl::GetFlag(FLAGS_decay);
  o.scheduler = absl::GetFlag(FLAGS_scheduler);
  o.plateau_patience = absl::GetFlag(FLAGS_patience);
  o.plateau_factor = absl::GetFlag(FLAGS_factor);
  o.seed = static_cast<uint64_t>(absl::GetFlag(FLAGS_seed));
  o.val_ratio = absl::GetFlag(FLAGS_val_ratio);
  o.subset_ratio = absl::GetFlag(FLAGS_subset_ratio);
  o.pretrained = absl::GetFlag(FLAGS_pretrained);
  o.resume = absl::GetFlag(FLAGS_resume);
  o.out = absl::GetFlag(FLAGS_out);
  o.model_name = absl::GetFlag(FLAGS_name);
  o.model_version = absl::GetFlag(FLAGS_version);
  o.max_steps_per_epoch = absl::GetFlag(FLAGS_max_steps);
  o.cuda = absl::GetFlag(FLAGS_cuda);
  o.channels_last = absl::GetFlag(FLAGS_channels_last);
  if (!absl::GetFlag(FLAGS_augment)) {
    o.crop_padding = 0;
    o.hflip = false;
  }
  torch::manual_seed(o.seed);

  eenn::common::DatasetOptions d;
  auto fmt = eenn::common::ParseDatasetFormat(absl::GetFlag(FLAGS_dataset));
  if (!fmt.ok()) return Fail(fmt.status());
  d.format = *fmt;
  d.dir = absl::GetFlag(FLAGS_data_dir);
  d.split = "train";
  d.subset_ratio = absl::GetFlag(FLAGS_subset_ratio);
  d.seed = o.seed;
  const bool cifar = o.spec.variant == eenn::common::Variant::kCifar;
  d.height = d.width = cifar ? 32 : 224;
  std::fprintf(stderr, "eenn-train: loading %s ...\n", d.dir.c_str());
  auto data = eenn::common::LoadDataset(d);
  if (!data.ok()) return Fail(data.status());
  std::fprintf(stderr, "eenn-train: %lld images, %zu classes, %lldx%lldx%lld\n",
               static_cast<long long>(data->size()), data->class_names.size(),
               static_cast<long long>(data->channels), static_cast<long long>(data->height),
               static_cast<long long>(data->width));
  o.spec.num_classes = absl::GetFlag(FLAGS_num_classes) > 0 ? absl::GetFlag(FLAGS_num_classes)
                                                           : static_cast<int64_t>(data->class_names.size());
  o.input.shape = {data->channels, cifar ? 32 : 224, cifar ? 32 : 224};
  if (cifar) {
    o.input.mean = {0.4914f, 0.4822f, 0.4465f};
    o.input.std = {0.2470f, 0.2435f, 0.2616f};
  } else {
    o.input.mean = {0.485f, 0.456f, 0.406f};
    o.input.std = {0.229f, 0.224f, 0.225f};
  }
  o.stop = &g_stop;
  InstallStopHandlers();
  auto report = eenn::train::Train(o, *data);
  if (!report.ok() && report.status().code() == absl::StatusCode::kCancelled) {
    std::fprintf(stderr, "eenn-train: %s\n", std::string(report.status().message()).c_str());
    return 130;
  }
  if (!report.ok()) return Fail(report.status());
  std::fprintf(stderr, "eenn-train: wrote bundle %s\n", report->bundle_dir.c_str());
  return 0;
}
