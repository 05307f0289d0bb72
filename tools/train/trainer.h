// The eenn trainer: trains a zoo backbone and its exit heads on an in-memory
// dataset and writes a bundle. Training modes follow the reference
// implementation (see README "Training"):
//
//   naive        cross-entropy on the final classifier of a plain model
//   end_weight   sum of every exit's cross-entropy, weight 1 each (or the
//                weights given in TrainOptions::exit_weights)
//   end_join     weight of exit g of G rises linearly from 0.01 to g/G over
//                the first 10 epochs, then stays
//   freeze       backbone, its batch-norm statistics and the final
//                classifier frozen; only the new exits learn
//   incremental  exit 1 with the backbone slice before it, then both frozen,
//                then exit 2 with the next slice, and so on
//
// Determinism: data order, augmentation and dropout are seeded from (seed,
// epoch), so a run resumed from a checkpoint continues exactly as the
// uninterrupted run would.
//
// Thread-safety: a Trainer is used from one thread.
#ifndef EENN_TOOLS_TRAIN_TRAINER_H_
#define EENN_TOOLS_TRAIN_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset.h"
#include "common/manifest.h"
#include "common/model_spec.h"

namespace eenn::train {

enum class TrainMode { kNaive, kEndWeight, kEndJoin, kFreeze, kIncremental };
absl::StatusOr<TrainMode> ParseTrainMode(const std::string& name);
std::string TrainModeName(TrainMode m);

struct TrainOptions {
  common::ModelSpec spec;                // architecture, variant, width, classes, exits
  TrainMode mode = TrainMode::kEndJoin;  // loss and what learns
  std::vector<double> exit_weights;      // end_weight: per-exit loss weights, final last
                                         // (empty = 1 each)
  double distill = 0;                    // self-distillation: share of each early exit's loss
                                         // that matches the final exit's softened output
                                         // (0 = plain cross-entropy, 1 = distillation only)
  double distill_temperature = 3;        // softmax temperature of that match
  int epochs = 30;                       // per stage in incremental mode
  int batch = 128;                       // images per step
  std::string optim = "sgd";             // sgd | adam
  double lr = 0.1;                       // peak learning rate
  double momentum = 0.9;                 // SGD momentum (Adam ignores it)
  double decay = 5e-4;                   // weight decay
  bool nesterov = true;                  // SGD Nesterov momentum
  std::string scheduler = "onecycle";    // none | plateau | cosine | onecycle
  double plateau_factor = 0.1;           // plateau: LR multiplier on a plateau
  int plateau_patience = 3;              // plateau: epochs without improvement
  double plateau_threshold = 1e-3;       // plateau: relative improvement that counts
  double min_lr = 1e-6;                  // plateau: floor
  double val_ratio = 0.1;                // share of the training data held out
  // Share of each class the dataset was cut to before training (--subset_ratio,
  // applied by the loader with `seed`). Recorded in the bundle so that the tools
  // recover the validation split from the same images.
  double subset_ratio = 1.0;
  uint64_t seed = 0;                     // everything random derives from it
  int crop_padding = 4;                  // augmentation: random crop padding (0 = off)
  bool hflip = true;                     // augmentation: horizontal flips
  std::string pretrained;                // bundle to start the backbone and classifier from
  std::string resume;                    // checkpoint directory to continue from
  std::string out;                       // bundle directory to write
  std::string checkpoint_dir;            // default: <out>/checkpoint
  std::string model_name = "eenn-model"; // served name in the manifest
  std::string model_version = "1";       // served version in the manifest
  common::InputSpec input;               // normalisation stored in the bundle
  bool cuda = false;                     // train on CUDA when LibTorch has a CUDA device
  bool channels_last = true;             // NHWC activations and weights while training
  int max_steps_per_epoch = 0;           // > 0 caps steps per epoch (tests, smoke runs)
  int stop_after_epochs = 0;             // > 0: stop (checkpointed) after this many epochs of the run
  // Set (by a signal handler, say) to stop between two steps: Train writes a
  // checkpoint at that step (weights, optimizer, the epoch's position, random
  // state and running loss; --resume continues from the next step as if never
  // stopped) and returns Cancelled. Stopped before the epoch's first step, the
  // last checkpoint stays. Checkpoints are written to <dir>.partial and swapped
  // in, so a stop or crash while writing one never leaves a half-written one.
  const std::atomic<bool>* stop = nullptr;
  int64_t stop_after_steps = 0;          // > 0: stop as by `stop` after this many steps of the run (tests)
  bool progress = true;                  // live progress line on stderr
  std::string command_line;              // recorded in the bundle metadata
};

struct EpochStats {
  int epoch = 0;      // 1-based global epoch
  int stage = 0;      // incremental: which exit is training; else 0
  double train_loss = 0;                // weighted loss the optimiser saw
  std::vector<double> exit_train_loss;  // unweighted cross-entropy per exit (trained exits only)
  double val_loss = 0;
  std::vector<double> val_accuracy;  // per exit, in [0, 1]
  double lr = 0;
  double images_per_s = 0;
  double images_per_s_steady = 0;  // after the first 3 steps of the epoch
  double seconds = 0;
};

struct TrainReport {
  std::vector<EpochStats> epochs;  // of this run (after a resume: only the new ones)
  std::string bundle_dir;
};

// Trains and writes the bundle (and a checkpoint after every epoch).
// `on_epoch` (optional) sees every epoch's stats.
// InvalidArgument for inconsistent options (naive with exits, freeze without
// --pretrained, dataset not fitting the input shape, ...); errors from the
// dataset, checkpoint and bundle layers are passed through.
absl::StatusOr<TrainReport> Train(const TrainOptions& options, const common::ImageDataset& data,
                                  const std::function<void(const EpochStats&)>& on_epoch = {});

}  // namespace eenn::train

#endif  // EENN_TOOLS_TRAIN_TRAINER_H_
