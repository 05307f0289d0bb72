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

TEST(ImageTest, HeadersGiveEverySupportedFormatsSizeWithoutDecoding) {
  cv::Mat m(23, 41, CV_8UC3, cv::Scalar(10, 20, 30));
  for (const auto& [ext, format] : std::vector<std::pair<std::string, std::string>>{
           {".jpg", "jpeg"}, {".png", "png"}, {".bmp", "bmp"}, {".webp", "webp"}, {".ppm", "pnm"}}) {
    const std::string bytes = Encode(m, ext);
    auto h = ReadImageHeader(bytes);
    ASSERT_TRUE(h.ok()) << ext << ": " << h.status();
    EXPECT_EQ(h->format, format);
    EXPECT_EQ(h->width, 41) << ext;
    EXPECT_EQ(h->height, 23) << ext;
    auto img = DecodeImage(bytes);
    ASSERT_TRUE(img.ok()) << ext << ": " << img.status();
    EXPECT_EQ(img->cols, 41);
  }
  std::vector<int> lossless = {cv::IMWRITE_WEBP_QUALITY, 101};
  std::vector<uchar> buf;
  ASSERT_TRUE(cv::imencode(".webp", m, buf, lossless));
  auto h = ReadImageHeader(std::string(buf.begin(), buf.end()));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->width, 41);
  EXPECT_EQ(h->height, 23);
  // A grey PNM with a comment in its header.
  h = ReadImageHeader("P5\n# made by hand\n7 3\n255\n" + std::string(21, '\x80'));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->width, 7);
  EXPECT_EQ(h->height, 3);
}

TEST(ImageTest, DeclaredHugeImagesAreRefusedBeforeDecoding) {
  // A real 16x16 PNG whose IHDR is rewritten to declare 20000 x 20000: the
  // refusal must come from the header (decoding would allocate 1.2 GB).
  cv::Mat m(16, 16, CV_8UC3, cv::Scalar(1, 2, 3));
  std::string png = Encode(m, ".png");
  const unsigned char dims[8] = {0, 0, 0x4E, 0x20, 0, 0, 0x4E, 0x20};
  png.replace(16, 8, reinterpret_cast<const char*>(dims), 8);
  auto img = DecodeImage(png);
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(img.status().message().find("20000x20000"), std::string::npos) << img.status();
  // The same for a JPEG frame header (65000 x 65000) and a BMP.
  std::string jpg = Encode(m, ".jpg");
  const size_t sof = jpg.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  jpg[sof + 5] = jpg[sof + 7] = static_cast<char>(0xFD);
  jpg[sof + 6] = jpg[sof + 8] = static_cast<char>(0xE8);
  img = DecodeImage(jpg);
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(img.status().message().find("65000x65000"), std::string::npos) << img.status();
  std::string bmp = Encode(m, ".bmp");
  const unsigned char bdims[8] = {0x20, 0x4E, 0, 0, 0xE0, 0xB1, 0xFF, 0xFF};  // 20000, -20000 (top-down)
  bmp.replace(18, 8, reinterpret_cast<const char*>(bdims), 8);
  img = DecodeImage(bmp);
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(img.status().message().find("20000x20000"), std::string::npos) << img.status();
}

TEST(ImageTest, TruncatedAndForeignInputsAreRefusedWithTheReason) {
  cv::Mat m(32, 32, CV_8UC3);
  cv::randu(m, 0, 255);
  const std::string jpg = Encode(m, ".jpg");
  for (size_t keep : {jpg.size() - 2, jpg.size() / 2, size_t{40}, size_t{3}}) {
    auto img = DecodeImage(jpg.substr(0, keep));
    EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument) << keep;
    EXPECT_NE(img.status().message().find("JPEG"), std::string::npos) << keep << ": " << img.status();
  }
  EXPECT_TRUE(DecodeImage(jpg + std::string(8, '\0')).ok()) << "zero padding after EOI is fine";
  const std::string png = Encode(m, ".png");
  for (size_t keep : {png.size() - 1, png.size() / 2, size_t{20}}) {
    EXPECT_EQ(DecodeImage(png.substr(0, keep)).status().code(), absl::StatusCode::kInvalidArgument) << keep;
  }
  auto tiff = DecodeImage(Encode(m, ".tiff"));
  EXPECT_EQ(tiff.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tiff.status().message().find("supported format"), std::string::npos) << tiff.status();
  EXPECT_EQ(DecodeImage("BM").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeImage("P6\n0 0\n255\n").status().code(), absl::StatusCode::kInvalidArgument);
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
