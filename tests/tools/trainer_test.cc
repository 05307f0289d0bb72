// The trainer on a tiny network and a small real-data subset (Fashion-MNIST
// from Debian's dataset-fashion-mnist, conformed to 3x32x32).
#include "tools/train/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/bundle.h"
#include "common/dataset.h"
#include "tests/test_util.h"

namespace eenn::train {
namespace {

constexpr char kFashion[] = "/usr/share/datasets/fashion-mnist";

const common::ImageDataset& Data() {
  static const common::ImageDataset* data = [] {
    common::DatasetOptions o;
    o.format = common::DatasetFormat::kIdx;
    o.dir = kFashion;
    o.split = "train";
    o.subset_ratio = 0.02;  // 1,200 images, stratified
    o.height = o.width = 32;
    o.channels = 3;
    auto d = common::LoadDataset(o);
    EXPECT_TRUE(d.ok()) << d.status();
    return new common::ImageDataset(*std::move(d));
  }();
  return *data;
}

TrainOptions Tiny(const std::string& out, TrainMode mode, std::vector<int> exits) {
  TrainOptions o;
  o.spec.architecture = "resnet18";
  o.spec.width = 0.125;
  o.spec.num_classes = 10;
  o.spec.exit_layers = std::move(exits);
  o.mode = mode;
  o.epochs = 3;
  o.batch = 64;
  o.lr = 0.05;
  o.scheduler = "none";
  o.val_ratio = 0.2;
  o.seed = 3;
  o.out = out;
  o.progress = false;
  o.input.shape = {3, 32, 32};
  o.input.mean = {0.3f, 0.3f, 0.3f};
  o.input.std = {0.35f, 0.35f, 0.35f};
  return o;
}

std::map<std::string, torch::Tensor> Weights(const std::string& bundle_dir) {
  auto b = common::LoadBundle(bundle_dir);
  EXPECT_TRUE(b.ok()) << b.status();
  std::map<std::string, torch::Tensor> out;
  for (auto& [n, t] : b->model->StateDict()) out.emplace(n, t.clone());
  return out;
}

bool StartsWithAny(const std::string& s, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes) {
    if (s.rfind(p, 0) == 0) return true;
  }
  return false;
}

// Prefixes "backbone.<i>." for i in [a, b].
std::vector<std::string> Layers(int a, int b) {
  std::vector<std::string> v;
  for (int i = a; i <= b; ++i) v.push_back("backbone." + std::to_string(i) + ".");
  return v;
}

void ExpectLossFalls(const TrainReport& r, const std::vector<int>& exits) {
  ASSERT_GE(r.epochs.size(), 2u);
  for (int g : exits) {
    EXPECT_LT(r.epochs.back().exit_train_loss[g], r.epochs.front().exit_train_loss[g])
        << "exit " << g;
  }
}

TEST(TrainerTest, NaiveTrainsThePlainModel) {
  testing::TempDir dir;
  auto r = Train(Tiny(dir.path(), TrainMode::kNaive, {}), Data());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectLossFalls(*r, {0});
  EXPECT_GT(r->epochs.back().val_accuracy[0], 0.3);  // chance is 0.1
  auto b = common::LoadBundle(dir.path());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->manifest.class_names[9], "ankle-boot");
  EXPECT_TRUE(std::filesystem::exists(dir.Join("train_log.jsonl")));
  // Naive refuses early exits.
  EXPECT_EQ(Train(Tiny(dir.path(), TrainMode::kNaive, {5}), Data()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TrainerTest, EndWeightAndEndJoinTrainEveryExit) {
  for (TrainMode mode : {TrainMode::kEndWeight, TrainMode::kEndJoin}) {
    testing::TempDir dir;
    auto r = Train(Tiny(dir.path(), mode, {5, 7}), Data());
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectLossFalls(*r, {0, 1, 2});
  }
}

TEST(TrainerTest, EndWeightUsesTheGivenExitWeights) {
  testing::TempDir dir;
  TrainOptions o = Tiny(dir.path(), TrainMode::kEndWeight, {5, 7});
  o.exit_weights = {0.25, 0.5, 1.0};
  auto r = Train(o, Data());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectLossFalls(*r, {0, 1, 2});
  for (const EpochStats& e : r->epochs) {
    const double weighted = 0.25 * e.exit_train_loss[0] + 0.5 * e.exit_train_loss[1] + e.exit_train_loss[2];
    EXPECT_NEAR(e.train_loss, weighted, 1e-6 * weighted) << "epoch " << e.epoch;
  }

  // A zero weight leaves that exit's head untouched (no gradient reaches it).
  testing::TempDir zero;
  o = Tiny(zero.path(), TrainMode::kEndWeight, {5, 7});
  o.exit_weights = {0.0, 1.0, 1.0};
  auto z = Train(o, Data());
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->epochs.back().exit_train_loss[0], 0.0);
  torch::manual_seed(o.seed);  // the trainer initialises from the seed
  auto init = common::EarlyExitNet::Create(o.spec);
  ASSERT_TRUE(init.ok()) << init.status();
  auto after = Weights(zero.path());
  int checked = 0;
  for (auto& [name, t] : (*init)->StateDict()) {
    if (name.rfind("gates.5.", 0) == 0) {
      EXPECT_TRUE(torch::equal(after.at(name), t)) << name << " changed";
      ++checked;
    } else if (name.rfind("gates.7.", 0) == 0 && name.find("weight") != std::string::npos) {
      EXPECT_FALSE(torch::equal(after.at(name), t)) << name << " did not learn";
    }
  }
  EXPECT_GT(checked, 0);

  // Inconsistent weights are refused.
  for (std::vector<double> bad : {std::vector<double>{1.0, 1.0}, {1.0, -0.5, 1.0}, {1.0, 1.0, 0.0}}) {
    o.exit_weights = bad;
    EXPECT_EQ(Train(o, Data()).status().code(), absl::StatusCode::kInvalidArgument);
  }
  o = Tiny(zero.path(), TrainMode::kEndJoin, {5, 7});
  o.exit_weights = {1.0, 1.0, 1.0};
  EXPECT_EQ(Train(o, Data()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainerTest, FreezeTrainsOnlyTheNewExits) {
  testing::TempDir pre, dir;
  ASSERT_TRUE(Train(Tiny(pre.path(), TrainMode::kNaive, {}), Data()).ok());
  TrainOptions o = Tiny(dir.path(), TrainMode::kFreeze, {5, 7});
  EXPECT_EQ(Train(o, Data()).status().code(), absl::StatusCode::kInvalidArgument);  // no pretrained
  o.pretrained = pre.path();
  // Another seed would carve another validation split out of the training data.
  TrainOptions other_split = o;
  other_split.seed = o.seed + 1;
  auto refused = Train(other_split, Data());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("Use --seed " + std::to_string(o.seed)), std::string::npos)
      << refused.status();
  auto r = Train(o, Data());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectLossFalls(*r, {0, 1});
  auto before = Weights(pre.path());
  auto after = Weights(dir.path());
  int frozen = 0, learned = 0;
  for (auto& [name, t] : after) {
    if (name.rfind("backbone.", 0) == 0 || name.rfind("gates.11.", 0) == 0) {
      // Backbone, its batch-norm statistics and the final classifier: bit-identical.
      ASSERT_TRUE(before.count(name)) << name;
      EXPECT_TRUE(torch::equal(before[name], t)) << name << " changed";
      ++frozen;
    } else if (name.find("weight") != std::string::npos) {
      ++learned;
    }
  }
  EXPECT_GT(frozen, 50);
  EXPECT_EQ(learned, 2);
}

TEST(TrainerTest, DistillTeachesEarlyExitsFromTheFinalExit) {
  testing::TempDir pre, dir;
  ASSERT_TRUE(Train(Tiny(pre.path(), TrainMode::kNaive, {}), Data()).ok());
  // Distillation only (share 1): the frozen exits never see a label, yet they
  // learn the classes from the final exit's softened output.
  TrainOptions o = Tiny(dir.path(), TrainMode::kFreeze, {5, 7});
  o.pretrained = pre.path();
  o.distill = 1.0;
  o.distill_temperature = 2.0;
  o.epochs = 8;
  o.lr = 0.2;
  auto r = Train(o, Data());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectLossFalls(*r, {0, 1});  // their (reported) cross-entropy falls all the same
  for (int g : {0, 1}) {  // twice chance at least, and rising
    EXPECT_GT(r->epochs.back().val_accuracy[g], 0.2) << "exit " << g;
    EXPECT_GT(r->epochs.back().val_accuracy[g], r->epochs.front().val_accuracy[g]) << "exit " << g;
  }
  for (const EpochStats& e : r->epochs) {
    // The optimised loss is the distillation term, not the cross-entropy.
    EXPECT_GT(std::abs(e.train_loss - (e.exit_train_loss[0] + e.exit_train_loss[1])), 1e-3)
        << "epoch " << e.epoch;
  }
  auto before = Weights(pre.path());
  auto after = Weights(dir.path());
  for (auto& [name, t] : after) {
    if (name.rfind("backbone.", 0) == 0 || name.rfind("gates.11.", 0) == 0) {
      EXPECT_TRUE(torch::equal(before.at(name), t)) << name << " changed";
    }
  }

  // Distillation needs the final exit while early exits train, and sane values.
  testing::TempDir bad;
  TrainOptions naive = Tiny(bad.path(), TrainMode::kNaive, {});
  naive.distill = 0.5;
  EXPECT_EQ(Train(naive, Data()).status().code(), absl::StatusCode::kInvalidArgument);
  TrainOptions incremental = Tiny(bad.path(), TrainMode::kIncremental, {5, 7});
  incremental.distill = 0.5;
  EXPECT_EQ(Train(incremental, Data()).status().code(), absl::StatusCode::kInvalidArgument);
  TrainOptions share = Tiny(bad.path(), TrainMode::kEndWeight, {5, 7});
  share.distill = 1.5;
  EXPECT_EQ(Train(share, Data()).status().code(), absl::StatusCode::kInvalidArgument);
  share.distill = 0.5;
  share.distill_temperature = 0;
  EXPECT_EQ(Train(share, Data()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainerTest, IncrementalFreezesStagesInOrder) {
  testing::TempDir dir;
  TrainOptions o = Tiny(dir.path(), TrainMode::kIncremental, {5, 7});
  o.epochs = 2;  // per stage: 3 stages, 6 epochs
  std::vector<std::map<std::string, torch::Tensor>> after_stage;
  auto r = Train(o, Data(), [&](const EpochStats& s) {
    if (s.epoch % 2 == 0) after_stage.push_back(Weights(dir.Join("checkpoint")));
  });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->epochs.size(), 6u);
  ASSERT_EQ(after_stage.size(), 3u);
  // Stage 0 trains layers 0..5 and exit 0; stage 1 layers 6..7 and exit 1; stage 2 the rest.
  const std::vector<std::vector<std::string>> owned = {
      [] { auto v = Layers(0, 5); v.push_back("gates.5."); return v; }(),
      [] { auto v = Layers(6, 7); v.push_back("gates.7."); return v; }(),
      [] { auto v = Layers(8, 11); v.push_back("gates.11."); return v; }()};
  for (int s = 0; s < 3; ++s) {
    for (auto& [name, t] : after_stage[s]) {
      for (int later = s + 1; later < 3; ++later) {
        if (StartsWithAny(name, owned[s])) {
          EXPECT_TRUE(torch::equal(t, after_stage[later].at(name)))
              << name << " changed after its stage " << s;
        }
      }
    }
  }
  // Each stage lowers its own exit's loss.
  EXPECT_LT(r->epochs[1].exit_train_loss[0], r->epochs[0].exit_train_loss[0]);
  EXPECT_LT(r->epochs[3].exit_train_loss[1], r->epochs[2].exit_train_loss[1]);
  EXPECT_LT(r->epochs[5].exit_train_loss[2], r->epochs[4].exit_train_loss[2]);
  EXPECT_EQ(r->epochs[2].stage, 1);
}

// Resumes `checkpoint` into `out` with the options of the uninterrupted run `o`
// (which wrote `full`, epochs `full_epochs`): the resumed run trains epoch 2 only,
// to the same loss, and ends with the same weights, within `tol`.
void ExpectResumeMatches(const TrainOptions& o, const std::string& checkpoint, const std::string& out,
                         const std::vector<EpochStats>& full_epochs, double tol) {
  TrainOptions c = o;
  const std::string full = o.out;
  c.out = out;
  c.resume = checkpoint;
  auto r = Train(c, Data());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->epochs.size(), 1u);
  EXPECT_EQ(r->epochs[0].epoch, 2);
  EXPECT_NEAR(r->epochs[0].train_loss, full_epochs[1].train_loss, tol);
  auto wa = Weights(full);
  auto wr = Weights(out);
  for (auto& [name, t] : wa) {
    EXPECT_LE((t.to(torch::kDouble) - wr.at(name).to(torch::kDouble)).abs().max().item<double>(), tol) << name;
  }
}

TEST(TrainerTest, ResumeContinuesAtTheRightEpochWithTheSameOptimizerState) {
  testing::TempDir full, part, resumed;
  TrainOptions o = Tiny(full.path(), TrainMode::kEndWeight, {5});
  o.epochs = 2;
  o.scheduler = "onecycle";
  o.max_steps_per_epoch = 8;
  auto a = Train(o, Data());
  ASSERT_TRUE(a.ok()) << a.status();

  TrainOptions p = o;
  p.out = part.path();
  p.stop_after_epochs = 1;
  auto b = Train(p, Data());
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(b->epochs.size(), 1u);

  // Same weights as the uninterrupted run: the momentum buffers were restored
  // (a fresh optimizer would take different steps).
  ExpectResumeMatches(o, part.Join("checkpoint"), resumed.path(), a->epochs, 1e-4);
  TrainOptions c = o;
  c.out = resumed.path();
  c.resume = part.Join("checkpoint");
  // A resume from another mode, or with another split, is refused.
  TrainOptions bad = c;
  bad.mode = TrainMode::kEndJoin;
  EXPECT_EQ(Train(bad, Data()).status().code(), absl::StatusCode::kFailedPrecondition);
  for (int k = 0; k < 3; ++k) {
    TrainOptions other = c;
    if (k == 0) other.seed += 1;
    if (k == 1) other.val_ratio = 0.25;
    if (k == 2) other.subset_ratio = 0.5;
    auto refused = Train(other, Data());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << k;
    EXPECT_NE(refused.status().message().find("resume with the same split"), absl::string_view::npos)
        << refused.status();
  }
}

TEST(TrainerTest, StopBetweenStepsKeepsTheLastCheckpoint) {
  testing::TempDir out;
  std::atomic<bool> stop{false};
  TrainOptions o = Tiny(out.path(), TrainMode::kNaive, {});
  o.epochs = 3;
  o.max_steps_per_epoch = 4;
  o.stop = &stop;
  // Asked to stop once epoch 1 is checkpointed: epoch 2 stops before its first step.
  auto r = Train(o, Data(), [&](const EpochStats&) { stop = true; });
  ASSERT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_NE(r.status().message().find("stopped in epoch 2 after 0 of 4 steps; resume after epoch 1"),
            absl::string_view::npos)
      << r.status();
  const std::string ck = out.Join("checkpoint");
  std::ifstream in(ck + "/trainer_state.json");
  const nlohmann::json state = nlohmann::json::parse(in, nullptr, false);
  ASSERT_TRUE(state.is_object());
  EXPECT_EQ(state["epochs_done"].get<int>(), 1);
  // The checkpoint was swapped in whole; no final bundle was written.
  EXPECT_FALSE(std::filesystem::exists(ck + ".partial"));
  EXPECT_FALSE(std::filesystem::exists(ck + ".old"));
  EXPECT_FALSE(std::filesystem::exists(out.Join("manifest.json")));
  // A run that ended between the swap's two renames left only <dir>.old: --resume <dir> finds it.
  std::filesystem::rename(ck, ck + ".old");
  // And one that ended between epoch 2's log line and its checkpoint logged an
  // epoch the resume runs again: its line goes.
  std::ofstream(out.Join("train_log.jsonl"), std::ios::app) << R"({"epoch":2,"train_loss":9})" << "\n";
  TrainOptions c = o;
  c.stop = nullptr;
  c.resume = ck;
  auto done = Train(c, Data());
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->epochs.size(), 2u);
  EXPECT_EQ(done->epochs.front().epoch, 2);
  std::ifstream log(out.Join("train_log.jsonl"));
  std::vector<int> logged;
  for (std::string line; std::getline(log, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    logged.push_back(j["epoch"].get<int>());
    EXPECT_NE(j["train_loss"].get<double>(), 9.0);
  }
  EXPECT_EQ(logged, (std::vector<int>{1, 2, 3}));
}

TEST(TrainerTest, StopInsideAnEpochResumesAtThatStep) {
  // Incremental too: its stop falls in the first epoch of exit 2's stage, whose
  // optimizer (fresh at a stage boundary) the resume has to restore all the same.
  for (TrainMode mode : {TrainMode::kEndWeight, TrainMode::kIncremental}) {
    SCOPED_TRACE(TrainModeName(mode));
    testing::TempDir full, part, resumed;
    TrainOptions o = Tiny(full.path(), mode, {5});
    o.epochs = mode == TrainMode::kIncremental ? 1 : 2;
    o.scheduler = "onecycle";
    o.max_steps_per_epoch = 8;
    auto a = Train(o, Data());
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_EQ(a->epochs.size(), 2u);

    TrainOptions p = o;
    p.out = part.path();
    p.stop_after_steps = 11;  // epoch 2, after its third step
    auto b = Train(p, Data());
    ASSERT_EQ(b.status().code(), absl::StatusCode::kCancelled) << b.status();
    EXPECT_NE(b.status().message().find("stopped in epoch 2 after 3 of 8 steps; checkpoint saved at that step"),
              absl::string_view::npos)
        << b.status();
    std::ifstream in(part.Join("checkpoint/trainer_state.json"));
    const nlohmann::json state = nlohmann::json::parse(in, nullptr, false);
    ASSERT_TRUE(state.is_object());
    EXPECT_EQ(state["epochs_done"].get<int>(), 1);
    EXPECT_EQ(state["position"]["step"].get<int>(), 3);

    // Another batch size or step cap would walk another order: refused.
    TrainOptions other = o;
    other.out = resumed.path();
    other.resume = part.Join("checkpoint");
    other.max_steps_per_epoch = 6;
    EXPECT_EQ(Train(other, Data()).status().code(), absl::StatusCode::kFailedPrecondition);
    // A damaged position is a clear error, not a run that quietly diverges.
    const std::string damaged = part.Join("damaged");
    std::filesystem::copy(part.Join("checkpoint"), damaged, std::filesystem::copy_options::recursive);
    for (const char* field : {"rng", "torch_rng"}) {
      nlohmann::json bad_state = state;
      bad_state["position"][field] = "not a random state";
      std::ofstream(damaged + "/trainer_state.json", std::ios::trunc) << bad_state.dump();
      TrainOptions d = o;
      d.out = resumed.path();
      d.resume = damaged;
      EXPECT_EQ(Train(d, Data()).status().code(), absl::StatusCode::kDataLoss) << field;
    }

    // The same loss (the epoch's counts its three steps before the stop) and
    // weights as the uninterrupted run: the same batches, augmentation and
    // optimizer state from the step after the stop on.
    ExpectResumeMatches(o, part.Join("checkpoint"), resumed.path(), a->epochs, 1e-5);
  }
}

TEST(TrainerTest, OptionValidation) {
  testing::TempDir dir;
  TrainOptions o = Tiny(dir.path(), TrainMode::kEndWeight, {5});
  o.scheduler = "warmup";
  EXPECT_EQ(Train(o, Data()).status().code(), absl::StatusCode::kInvalidArgument);
  o = Tiny(dir.path(), TrainMode::kEndWeight, {5});
  o.input.shape = {3, 28, 28};
  EXPECT_EQ(Train(o, Data()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTrainMode("freeze_origin").value(), TrainMode::kFreeze);
  EXPECT_FALSE(ParseTrainMode("distill").ok());
}

}  // namespace
}  // namespace eenn::train
