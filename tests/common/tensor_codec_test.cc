#include "common/tensor_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace eenn::common {
namespace {

std::vector<float> Relu(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = std::max(0.0f, d(rng));
  return v;
}

TEST(TensorCodecTest, Fp32RoundTripIsExact) {
  std::vector<float> v = {0.0f, -1.5f, 3.25f, 1e-30f, -65504.0f, 1e30f};
  auto t = EncodeTensor(v.data(), {2, 3}, {WireEncoding::kFp32});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->encoded_size, 24);
  EXPECT_EQ(t->data.size(), 24u);
  auto back = DecodeTensor(View(*t), 100);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, v);
}

TEST(TensorCodecTest, HalfConversionRoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(1e9f), 0x7bff);  // saturates, stays finite
  EXPECT_EQ(FloatToHalf(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite positive half survives a round trip
    ASSERT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(TensorCodecTest, Fp16HalvesTheBytesWithSmallRelativeError) {
  auto v = Relu(4096, 1);
  auto t = EncodeTensor(v.data(), {1, 16, 16, 16}, {WireEncoding::kFp16});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->data.size(), 8192u);
  auto back = DecodeTensor(View(*t), 1 << 20);
  ASSERT_TRUE(back.ok());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR((*back)[i], v[i], std::abs(v[i]) * 1e-3 + 1e-7);
}

TEST(TensorCodecTest, Int8QuartersTheBytesKeepsZerosAndBoundsTheError) {
  auto v = Relu(4096, 2);
  auto t = EncodeTensor(v.data(), {1, 16, 16, 16}, {WireEncoding::kInt8});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->data.size(), 4096u);
  EXPECT_GT(t->scale, 0.0f);
  auto back = DecodeTensor(View(*t), 1 << 20);
  ASSERT_TRUE(back.ok());
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == 0.0f) EXPECT_EQ((*back)[i], 0.0f);
    EXPECT_NEAR((*back)[i], v[i], t->scale * 0.5f + 1e-6f);
  }
  // Signed data too.
  std::vector<float> s = {-3.0f, -1.0f, 0.0f, 2.0f, 5.0f};
  auto ts = EncodeTensor(s.data(), {5}, {WireEncoding::kInt8});
  auto bs = DecodeTensor(View(*ts), 10);
  ASSERT_TRUE(bs.ok());
  for (size_t i = 0; i < s.size(); ++i) EXPECT_NEAR((*bs)[i], s[i], ts->scale * 0.5f + 1e-6f);
  EXPECT_EQ((*bs)[2], 0.0f);
  // All zeros.
  std::vector<float> z(8, 0.0f);
  auto tz = EncodeTensor(z.data(), {8}, {WireEncoding::kInt8});
  auto bz = DecodeTensor(View(*tz), 10);
  ASSERT_TRUE(bz.ok());
  EXPECT_EQ(*bz, z);
}

// The vectorised encoders and decoders (SSE2 int8, F16C fp16) produce exactly
// the scalar definitions' bytes and values, tails included.
TEST(TensorCodecTest, VectorPathsEqualTheScalarDefinitions) {
  std::mt19937 rng(9);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> v(1003);  // not a multiple of any vector width
  for (auto& x : v) x = d(rng);
  v[0] = 1e9f;                                 // fp16: saturates, stays finite
  v[1] = -70000.0f;
  v[2] = 65519.0f;                             // rounds to 65504 either way
  v[3] = 5.960464477539063e-08f;               // smallest fp16 subnormal
  v[4] = 1.0f + std::ldexp(1.0f, -11);         // tie: to the even mantissa
  v[5] = -0.0f;
  v[6] = 3e-8f;
  v[1002] = 12345.678f;                        // the scalar tail
  auto half = EncodeTensor(v.data(), {1003}, {WireEncoding::kFp16});
  ASSERT_TRUE(half.ok());
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, half->data.data() + 2 * i, 2);
    ASSERT_EQ(h, FloatToHalf(v[i])) << "element " << i << " = " << v[i];
  }
  // Decoding: every finite half pattern, both signs.
  std::vector<uint16_t> all;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    all.push_back(static_cast<uint16_t>(h));
    all.push_back(static_cast<uint16_t>(h | 0x8000));
  }
  EncodedTensor t;
  t.shape = {static_cast<int64_t>(all.size())};
  t.encoding = WireEncoding::kFp16;
  t.encoded_size = static_cast<int64_t>(2 * all.size());
  t.data.assign(reinterpret_cast<const char*>(all.data()), 2 * all.size());
  auto decoded = DecodeTensor(View(t), 1 << 20);
  ASSERT_TRUE(decoded.ok());
  for (size_t i = 0; i < all.size(); ++i) {
    const float want = HalfToFloat(all[i]);
    ASSERT_EQ(std::memcmp(&(*decoded)[i], &want, 4), 0) << "half " << all[i];
  }
  // int8: q = clamp(lrint(v / scale) + zp, -128, 127), decode scale * (q - zp).
  auto q = EncodeTensor(v.data() + 7, {996}, {WireEncoding::kInt8});
  ASSERT_TRUE(q.ok());
  const float inv = 1.0f / q->scale;
  for (size_t i = 0; i < 996; ++i) {
    const int32_t want =
        std::clamp<int32_t>(static_cast<int32_t>(std::lrint(v[7 + i] * inv)) + q->zero_point, -128, 127);
    ASSERT_EQ(static_cast<int8_t>(q->data[i]), want) << "element " << i;
  }
  auto back = DecodeTensor(View(*q), 1 << 20);
  ASSERT_TRUE(back.ok());
  for (size_t i = 0; i < 996; ++i) {
    ASSERT_EQ((*back)[i], q->scale * static_cast<float>(static_cast<int8_t>(q->data[i]) - q->zero_point));
  }
  // A NaN or Inf inside the vectorised part is refused by every encoding, naming the element.
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    std::vector<float> w = v;
    w[500] = bad;
    for (WireEncoding e : {WireEncoding::kFp32, WireEncoding::kFp16, WireEncoding::kInt8}) {
      auto r = EncodeTensor(w.data(), {1003}, {e});
      ASSERT_FALSE(r.ok()) << EncodingName(e);
      EXPECT_NE(r.status().message().find("element 500"), std::string::npos) << r.status();
    }
  }
}

TEST(TensorCodecTest, ZstdIsLosslessAndSmallerOnSparseActivations) {
  auto v = Relu(8192, 3);
  for (auto e : {WireEncoding::kFp32, WireEncoding::kFp16, WireEncoding::kInt8}) {
    auto plain = EncodeTensor(v.data(), {8192}, {e});
    auto packed = EncodeTensor(v.data(), {8192}, {e, WireCompression::kZstd});
    ASSERT_TRUE(plain.ok() && packed.ok());
    EXPECT_LT(packed->data.size(), plain->data.size()) << EncodingName(e);
    auto a = DecodeTensor(View(*plain), 1 << 20);
    auto b = DecodeTensor(View(*packed), 1 << 20);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*a, *b);
  }
}

TEST(TensorCodecTest, RefusesNonFiniteValues) {
  std::vector<float> v = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  auto t = EncodeTensor(v.data(), {2}, {WireEncoding::kFp32});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("element 1"), std::string::npos);
  v[1] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(EncodeTensor(v.data(), {2}, {WireEncoding::kInt8}).ok());
  // On decode: an Inf smuggled into fp32 bytes, and the fp16 Inf pattern.
  std::vector<float> ok = {1.0f, 2.0f};
  auto good = EncodeTensor(ok.data(), {2}, {WireEncoding::kFp32});
  std::memcpy(good->data.data() + 4, &v[1], 4);
  EXPECT_EQ(DecodeTensor(View(*good), 10).status().code(), absl::StatusCode::kInvalidArgument);
  auto half = EncodeTensor(ok.data(), {2}, {WireEncoding::kFp16});
  half->data[2] = 0x00;
  half->data[3] = 0x7c;
  EXPECT_EQ(DecodeTensor(View(*half), 10).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TensorCodecTest, DecodeRejectsInconsistentTensors) {
  std::vector<float> v(12, 1.0f);
  auto t = EncodeTensor(v.data(), {3, 4}, {WireEncoding::kFp32});
  ASSERT_TRUE(t.ok());
  auto expect_invalid = [](EncodedTensorView view, int64_t max, const std::string& what) {
    auto r = DecodeTensor(view, max);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << what;
  };
  EncodedTensorView w = View(*t);
  w.shape = {};
  expect_invalid(w, 100, "empty shape");
  w = View(*t);
  w.shape = {3, -4};
  expect_invalid(w, 100, "negative dim");
  w = View(*t);
  w.shape = {0, 4};
  expect_invalid(w, 100, "zero dim");
  w = View(*t);
  w.shape = {1LL << 40, 1LL << 40};
  expect_invalid(w, 1LL << 40, "overflowing dims");
  w = View(*t);
  w.shape = {20000, 20000};
  expect_invalid(w, 1 << 20, "over the limit");
  w = View(*t);
  w.encoded_size = 47;
  expect_invalid(w, 100, "encoded_size");
  w = View(*t);
  w.data = w.data.substr(0, 40);
  expect_invalid(w, 100, "truncated");
  w = View(*t);
  w.compression = WireCompression::kZstd;
  expect_invalid(w, 100, "not a zstd frame");
  auto i8 = EncodeTensor(v.data(), {3, 4}, {WireEncoding::kInt8});
  w = View(*i8);
  w.scale = 0.0f;
  expect_invalid(w, 100, "zero scale");
  w = View(*i8);
  w.scale = std::numeric_limits<float>::infinity();
  expect_invalid(w, 100, "inf scale");
  w = View(*i8);
  w.zero_point = 300;
  expect_invalid(w, 100, "zero point");
  auto z = EncodeTensor(v.data(), {3, 4}, {WireEncoding::kFp32, WireCompression::kZstd});
  w = View(*z);
  std::string corrupt(z->data);
  corrupt[corrupt.size() / 2] ^= 0x5a;
  corrupt.resize(corrupt.size() - 2);
  w.data = corrupt;
  expect_invalid(w, 100, "corrupt zstd");
  w = View(*z);
  w.shape = {2, 4};
  w.encoded_size = 32;
  expect_invalid(w, 100, "zstd frame of another size");
}

TEST(TensorCodecTest, ParsesNames) {
  EXPECT_EQ(*ParseEncoding("int8"), WireEncoding::kInt8);
  EXPECT_EQ(*ParseCompression("zstd"), WireCompression::kZstd);
  EXPECT_FALSE(ParseEncoding("bf16").ok());
  EXPECT_FALSE(ParseCompression("lz4").ok());
}

}  // namespace
}  // namespace eenn::common
