#include "common/image.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <opencv2/imgcodecs.hpp>

#include "common/tensor_image.h"
#include "tests/test_util.h"

namespace eenn::common {
namespace {

std::string Encode(const cv::Mat& m, const std::string& ext) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, m, buf));
  return std::string(buf.begin(), buf.end());
}

InputSpec Spec(int h, int w) {
  InputSpec s;
  s.shape = {3, h, w};
  s.mean = {0.5f, 0.25f, 0.0f};
  s.std = {0.5f, 0.25f, 1.0f};
  return s;
}

TEST(ImageTest, PngDecodesToNormalisedRgbChw) {
  cv::Mat bgr(2, 3, CV_8UC3);
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 3; ++x) bgr.at<cv::Vec3b>(y, x) = cv::Vec3b(10 * x, 100 + y, 255);  // B, G, R
  }
  auto img = DecodeImage(Encode(bgr, ".png"));
  ASSERT_TRUE(img.ok()) << img.status();
  std::vector<float> out(3 * 2 * 3);
  ASSERT_TRUE(PreprocessImage(*img, Spec(2, 3), out.data()).ok());
  // Channel 0 is red (255): (1 - 0.5) / 0.5 = 1.
  EXPECT_FLOAT_EQ(out[0], 1.0f);
  // Channel 1 is green (100 + y): (v/255 - 0.25) / 0.25 at (y=1, x=2).
  EXPECT_NEAR(out[6 + 1 * 3 + 2], (101 / 255.0f - 0.25f) / 0.25f, 1e-6);
  // Channel 2 is blue (10x), mean 0, std 1.
  EXPECT_NEAR(out[12 + 0 * 3 + 2], 20 / 255.0f, 1e-6);
}

TEST(ImageTest, GreyImagesAndResizing) {
  cv::Mat grey(64, 48, CV_8UC1, cv::Scalar(128));
  auto img = DecodeImage(Encode(grey, ".png"));
  ASSERT_TRUE(img.ok());
  std::vector<float> out(3 * 32 * 32);
  ASSERT_TRUE(PreprocessImage(*img, Spec(32, 32), out.data()).ok());
  EXPECT_NEAR(out[0], (128 / 255.0f - 0.5f) / 0.5f, 1e-5);
  InputSpec crop = Spec(32, 32);
  crop.resize = ResizeMode::kCenterCrop;
  ASSERT_TRUE(PreprocessImage(*img, crop, out.data()).ok());
  InputSpec mono;
  mono.shape = {1, 16, 16};
  mono.mean = {0.0f, 0.0f, 0.0f};
  std::vector<float> one(16 * 16);
  ASSERT_TRUE(PreprocessImage(*img, mono, one.data()).ok());
  EXPECT_NEAR(one[0], 128 / 255.0f, 1e-5);
}

TEST(ImageTest, BadInputsAreRefusedClearly) {
  EXPECT_EQ(DecodeImage("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeImage("definitely not an image").status().code(),
            absl::StatusCode::kInvalidArgument);
  cv::Mat m(16, 16, CV_8UC3, cv::Scalar(1, 2, 3));
  std::string png = Encode(m, ".png");
  EXPECT_EQ(DecodeImage(png.substr(0, png.size() / 2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  DecodeLimits small;
  small.max_pixels = 100;
  auto big = DecodeImage(png, small);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("16x16"), std::string::npos);
  small = DecodeLimits{};
  small.max_bytes = 10;
  EXPECT_EQ(DecodeImage(png, small).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadImageFile("/nonexistent.png").status().code(), absl::StatusCode::kNotFound);
}

TEST(ImageTest, ListImageFilesRecursesAndSorts) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.Join("b"));
  std::filesystem::create_directories(dir.Join("a"));
  cv::Mat m(4, 4, CV_8UC3, cv::Scalar(1, 2, 3));
  cv::imwrite(dir.Join("b/2.png"), m);
  cv::imwrite(dir.Join("a/1.JPG"), m);
  testing::WriteAll(dir.Join("a/notes.txt"), "x");
  auto files = ListImageFiles({dir.path()});
  ASSERT_TRUE(files.ok());
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0], dir.Join("a/1.JPG"));
  EXPECT_EQ((*files)[1], dir.Join("b/2.png"));
  EXPECT_EQ(ListImageFiles({dir.Join("missing")}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ListImageFiles({dir.Join("a/notes.txt")}).value().size(), 1u);
}

TEST(TensorImageTest, BatchTensorMatchesPerImagePreprocessing) {
  cv::Mat a(32, 32, CV_8UC3, cv::Scalar(10, 20, 30));
  cv::Mat b(40, 20, CV_8UC3, cv::Scalar(200, 100, 0));
  auto t = ImagesToTensor({a, b}, Spec(32, 32));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->sizes(), (c10::IntArrayRef{2, 3, 32, 32}));
  std::vector<float> expect(3 * 32 * 32);
  ASSERT_TRUE(PreprocessImage(b, Spec(32, 32), expect.data()).ok());
  torch::Tensor e = torch::from_blob(expect.data(), {3, 32, 32}).clone();
  EXPECT_TRUE(torch::equal((*t)[1], e));
  EXPECT_EQ(ImagesToTensor({}, Spec(32, 32)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ImagesToTensor({a, cv::Mat()}, Spec(32, 32)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace eenn::common
