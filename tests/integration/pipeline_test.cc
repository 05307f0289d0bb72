// The model pipeline as users run it, binary by binary, on real data
// (Fashion-MNIST, a stratified 2% subset): eenn-train writes a bundle,
// eenn-calibrate sets its thresholds on the trainer's held-out split, eenn-eval
// on that split reproduces what calibration measured and reports the promise;
// an interrupted eenn-train stops cleanly and keeps its last checkpoint.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "tests/file_util.h"
#include "tests/process_util.h"

namespace eenn {
namespace {

using testing::BinPath;
using testing::RunCommand;

constexpr char kFashion[] = "/usr/share/datasets/fashion-mnist";
constexpr int kValSamples = 240;  // 20% of 2% of 60,000

// Runs an eenn tool on the Fashion-MNIST files with 2 threads; stderr joins stdout.
testing::CommandResult Tool(const std::string& name, const std::string& args) {
  return RunCommand(BinPath(name) + " --dataset fashion-mnist --data_dir " + kFashion + " --threads 2 " + args +
                    " 2>&1");
}

nlohmann::json LastJsonLine(const std::string& text) {
  std::istringstream in(text);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  return nlohmann::json::parse(last, nullptr, false);
}

class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    train_ = new testing::CommandResult(
        Tool("eenn-train",
             "--model resnet18 --width 0.125 --ee 4,7 --exit_pool 2 --train_mode end_weight --epochs 2 --batch 64"
             " --lr 0.05 --scheduler none --subset_ratio 0.02 --val_ratio 0.2 --seed 3 --name pipeline --version 1"
             " --out " + Bundle()));
  }
  static void TearDownTestSuite() {
    delete train_;
    delete dir_;
  }
  static std::string Bundle() { return dir_->Join("bundle"); }

  void SetUp() override { ASSERT_EQ(train_->exit_code, 0) << train_->out; }

  static testing::TempDir* dir_;
  static testing::CommandResult* train_;
};
testing::TempDir* PipelineTest::dir_ = nullptr;
testing::CommandResult* PipelineTest::train_ = nullptr;

TEST_F(PipelineTest, CalibrateThenEvaluateOnTheHeldOutSplit) {
  // The trainer's own last validation accuracy of the final exit.
  std::ifstream log(Bundle() + "/train_log.jsonl");
  std::string line, last;
  while (std::getline(log, line)) last = line;
  const nlohmann::json epoch = nlohmann::json::parse(last, nullptr, false);
  ASSERT_TRUE(epoch.is_object() && epoch.contains("val_accuracy")) << last;
  const double trainer_final = epoch["val_accuracy"].back().get<double>();

  testing::CommandResult cal = Tool("eenn-calibrate", "--bundle " + Bundle() + " --max_drop 2.0 --json");
  ASSERT_EQ(cal.exit_code, 0) << cal.out;
  const nlohmann::json report = LastJsonLine(cal.out);
  ASSERT_TRUE(report.is_object()) << cal.out;
  // The trainer's held-out images: the subset's 20%, not 20% of the whole split.
  EXPECT_EQ(report["validation_samples"].get<int>(), kValSamples);
  const double final_acc = report["final_exit_accuracy"].get<double>();
  const double promised = report["calibrated_accuracy"].get<double>();
  EXPECT_NEAR(final_acc, trainer_final, 1.0 / kValSamples + 1e-9);
  EXPECT_GE(promised, final_acc - 0.02 - 1e-9);
  EXPECT_GT(report["calibrated_accuracy_stderr"].get<double>(), 0);
  EXPECT_NEAR(report["calibrated_accuracy_stderr"].get<double>(),
              std::sqrt(promised * (1 - promised) / kValSamples), 1e-9);
  EXPECT_GE(report["drop_stderr"].get<double>(), 0);
  EXPECT_NEAR(report["drop"].get<double>(), final_acc - promised, 1e-9);

  // eenn-eval on the same split, one sample at a time: the promise reproduced.
  testing::CommandResult val = Tool("eenn-eval", "--bundle " + Bundle() + " --split val --json");
  ASSERT_EQ(val.exit_code, 0) << val.out;
  const nlohmann::json ev = LastJsonLine(val.out);
  ASSERT_TRUE(ev.is_object()) << val.out;
  EXPECT_EQ(ev["samples"].get<int>(), kValSamples);
  // Batch-1 inference against the calibration's batches: at most a sample's
  // answer (or side of a threshold) may differ by rounding.
  EXPECT_NEAR(ev["final_exit_accuracy"].get<double>(), 100 * final_acc, 100.0 / kValSamples + 1e-9);
  EXPECT_NEAR(ev["eenn_accuracy"].get<double>(), 100 * promised, 200.0 / kValSamples + 1e-9);
  int64_t total = 0;
  for (const auto& [layer, count] : ev["exit_histogram"].items()) total += count.get<int64_t>();
  EXPECT_EQ(total, kValSamples);
  ASSERT_TRUE(ev.contains("calibration_promise")) << ev.dump();
  const nlohmann::json& p = ev["calibration_promise"];
  EXPECT_NEAR(p["accuracy"].get<double>(), 100 * promised, 1e-9);
  EXPECT_NEAR(p["drop"].get<double>(), 100 * (final_acc - promised), 1e-9);
  EXPECT_NEAR(p["accuracy_difference"].get<double>(), ev["eenn_accuracy"].get<double>() - 100 * promised, 1e-9);
  EXPECT_EQ(p["validation_samples"].get<int>(), kValSamples);
  EXPECT_GT(p["accuracy_ci95"].get<double>(), 0);
  EXPECT_FALSE(p["stale"].get<bool>());

  // Thresholds edited after calibration: the promise is marked stale.
  {
    std::ifstream in(Bundle() + "/manifest.json");
    nlohmann::json m = nlohmann::json::parse(in);
    auto& t0 = m["exits"]["thresholds"][0];
    t0 = t0.get<double>() == 0.5 ? 0.6 : 0.5;
    std::ofstream(dir_->Join("edited.json")) << m.dump();
  }
  testing::CommandResult copy = RunCommand("cp -r " + Bundle() + " " + dir_->Join("edited") + " && mv " +
                                           dir_->Join("edited.json") + " " + dir_->Join("edited/manifest.json"));
  ASSERT_EQ(copy.exit_code, 0) << copy.out;
  testing::CommandResult edited = Tool("eenn-eval", "--bundle " + dir_->Join("edited") + " --split val --limit 40 --json");
  ASSERT_EQ(edited.exit_code, 0) << edited.out;
  EXPECT_TRUE(LastJsonLine(edited.out)["calibration_promise"]["stale"].get<bool>()) << edited.out;

  // On test images (a stratified subset), the table and the promise's line.
  testing::CommandResult test =
      Tool("eenn-eval", "--bundle " + Bundle() + " --dataset_name Fashion-MNIST --limit 300");
  ASSERT_EQ(test.exit_code, 0) << test.out;
  EXPECT_NE(test.out.find("| Fashion-MNIST | EENN-Resnet18 |"), std::string::npos) << test.out;
  EXPECT_NE(test.out.find("calibration promised on validation: "), std::string::npos) << test.out;
}

TEST_F(PipelineTest, InterruptedTrainingKeepsItsLastCheckpoint) {
  const std::string out = dir_->Join("interrupted");
  testing::Process p;
  ASSERT_TRUE(p.Start({BinPath("eenn-train"), "--dataset=fashion-mnist", std::string("--data_dir=") + kFashion,
                       "--threads=2", "--model=resnet18", "--width=0.125", "--train_mode=naive", "--epochs=500",
                       "--max_steps=3", "--batch=32", "--subset_ratio=0.02", "--val_ratio=0.2", "--seed=3",
                       "--out=" + out},
                      dir_->Join("interrupted.log")));
  // Wait for the first checkpoint, then Ctrl-C.
  const std::string state = out + "/checkpoint/trainer_state.json";
  for (int i = 0; i < 1200 && !std::filesystem::exists(state) && p.running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(std::filesystem::exists(state)) << p.log();
  p.Signal(SIGINT);
  EXPECT_EQ(p.Wait(std::chrono::seconds(60)), 130) << p.log();
  const std::string log = p.log();
  EXPECT_NE(log.find("stopping after this step"), std::string::npos) << log;
  // Stopped inside an epoch, the checkpoint is written at that step; stopped
  // before the epoch's first step, the last epoch's stays.
  EXPECT_TRUE(log.find("checkpoint saved at that step, resume with --resume ") != std::string::npos ||
              log.find("resume after epoch ") != std::string::npos)
      << log;
  std::ifstream in(state);
  const nlohmann::json s = nlohmann::json::parse(in, nullptr, false);
  ASSERT_TRUE(s.is_object()) << "checkpoint state unreadable after the stop";
  EXPECT_GE(s["epochs_done"].get<int>(), 1);
  EXPECT_FALSE(std::filesystem::exists(out + "/checkpoint.partial"));
  EXPECT_FALSE(std::filesystem::exists(out + "/manifest.json"));  // no final bundle from a stopped run
}

}  // namespace
}  // namespace eenn
