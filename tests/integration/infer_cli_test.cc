// Runs the real eenn-infer binary on a bundle and a folder of images and
// checks its answers against the in-process runtime.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>

#include "common/bundle.h"
#include "common/image.h"
#include "common/tensor_image.h"
#include "tests/process_util.h"
#include "tests/test_util.h"

namespace eenn {
namespace {

using testing::RunCommand;

std::string Binary() { return testing::BinPath("eenn-infer"); }

class InferCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    common::ModelSpec spec;
    spec.architecture = "resnet18";
    spec.width = 0.25;
    spec.exit_layers = {4, 7};
    auto net = common::EarlyExitNet::Create(spec);
    ASSERT_TRUE(net.ok());
    testing::Perturb(**net, 21);
    manifest_ = common::DefaultManifest(**net, "cli-test", "1");
    manifest_.class_names = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"};
    manifest_.thresholds = {0.3f, 0.3f, 0.0f};
    ASSERT_TRUE(common::SaveBundle(bundle_.path(), manifest_, **net).ok());
    std::filesystem::create_directories(images_.Join("cls"));
    cv::RNG rng(4);
    for (int i = 0; i < 6; ++i) {
      cv::Mat m(32, 32, CV_8UC3);
      rng.fill(m, cv::RNG::UNIFORM, 0, 255);
      cv::imwrite(images_.Join("cls/img" + std::to_string(i) + ".png"), m);
    }
  }
  testing::TempDir bundle_, images_;
  common::BundleManifest manifest_;
};

TEST_F(InferCliTest, JsonLinesMatchInProcessInference) {
  testing::CommandResult r = RunCommand(Binary() + " --threads 1 --json --bundle " + bundle_.path() + " " +
                    images_.path() + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto bundle = common::LoadBundle(bundle_.path());
  ASSERT_TRUE(bundle.ok());
  std::istringstream lines(r.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"file", "class", "class_name", "confidence", "exit_layer"}) {
      ASSERT_TRUE(j.contains(k)) << k << " in " << line;
    }
    auto img = common::ReadImageFile(j["file"].get<std::string>());
    ASSERT_TRUE(img.ok());
    auto x = common::ImagesToTensor({*img}, bundle->manifest.input);
    auto want = bundle->model->Classify(*x, bundle->policy);
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(j["class"].get<int64_t>(), (*want)[0].class_id);
    EXPECT_EQ(j["class_name"].get<std::string>(), manifest_.class_names[(*want)[0].class_id]);
    EXPECT_EQ(j["exit_layer"].get<int>(), (*want)[0].exit_layer);
    EXPECT_NEAR(j["confidence"].get<double>(), (*want)[0].confidence, 1e-5);
    ++n;
  }
  EXPECT_EQ(n, 6);
}

TEST_F(InferCliTest, CorruptImageIsReportedAndOthersStillAnswered) {
  testing::WriteAll(images_.Join("cls/broken.png"), "not a png at all");
  testing::CommandResult r = RunCommand(Binary() + " --threads 1 --json --bundle " + bundle_.path() + " " +
                    images_.path() + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("broken.png"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("6 images classified, 1 failed"), std::string::npos) << r.out;
}

TEST_F(InferCliTest, BadBundleFailsWithClearMessage) {
  std::filesystem::remove(bundle_.Join("weights.pt"));
  testing::CommandResult r = RunCommand(Binary() + " --bundle " + bundle_.path() + " " + images_.path() + " 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("weights.pt"), std::string::npos) << r.out;
}

TEST_F(InferCliTest, NoExitsFlagAnswersAtTheFinalLayer) {
  testing::CommandResult r = RunCommand(Binary() + " --threads 1 --json --no_exits --bundle " + bundle_.path() + " " +
                    images_.path() + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0);
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) EXPECT_EQ(nlohmann::json::parse(line)["exit_layer"], 11);
}

}  // namespace
}  // namespace eenn

namespace eenn {
namespace {

TEST_F(InferCliTest, FolderNamesLabelImagesForTheAccuracySummary) {
  // Images in a folder named like class c3: the accuracy is the share answered c3.
  std::filesystem::rename(images_.Join("cls"), images_.Join("c3"));
  testing::CommandResult r = RunCommand(Binary() + " --threads 1 --json --bundle " + bundle_.path() + " " +
                           images_.path() + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  int c3 = 0;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("{", 0) == 0 && nlohmann::json::parse(line)["class_name"] == "c3") ++c3;
  }
  char want[64];
  std::snprintf(want, sizeof want, "accuracy %.2f%% (%d of 6 labelled", 100.0 * c3 / 6, c3);
  EXPECT_NE(r.out.find(want), std::string::npos) << r.out << " lacks " << want;
}

}  // namespace
}  // namespace eenn
