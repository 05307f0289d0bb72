// Profile statistics, wire keys and profile_summary.json (reference keys and
// eenn's section, round trip and errors).
#include "common/profile.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "tests/file_util.h"

namespace eenn::common {
namespace {

using json = nlohmann::json;

TEST(ProfileTest, TimeStatsMatchTheReferenceDefinitions) {
  // numpy: mean 2.5, population var 1.25; logs of 1..4.
  TimeStats s = ComputeTimeStats({4, 1, 3, 2});
  EXPECT_EQ(s.n, 4);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.var, 1.25);
  EXPECT_DOUBLE_EQ(s.std, std::sqrt(1.25));
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 4);
  const double lm = (std::log(1.0) + std::log(2.0) + std::log(3.0) + std::log(4.0)) / 4;
  EXPECT_NEAR(s.log_mean, lm, 1e-12);
  double lv = 0;
  for (double v : {1.0, 2.0, 3.0, 4.0}) lv += (std::log(v) - lm) * (std::log(v) - lm);
  EXPECT_NEAR(s.log_var, lv / 4, 1e-12);
  // Linear interpolation between order statistics (numpy's default).
  EXPECT_DOUBLE_EQ(s.p50, 2.5);
  EXPECT_NEAR(s.p90, 3.7, 1e-12);
  EXPECT_NEAR(s.p99, 3.97, 1e-12);
  // Zero clamps to 1e-20 in the logs only.
  TimeStats z = ComputeTimeStats({0, 1});
  EXPECT_DOUBLE_EQ(z.min, 0);
  EXPECT_NEAR(z.log_mean, std::log(1e-20) / 2, 1e-9);
  // ms -> s: logs shift by ln(1e-3), spreads scale.
  TimeStats sec = ScaleTimeStats(s, 1e-3);
  EXPECT_DOUBLE_EQ(sec.mean, 2.5e-3);
  EXPECT_NEAR(sec.var, 1.25e-6, 1e-18);
  EXPECT_NEAR(sec.log_mean, s.log_mean + std::log(1e-3), 1e-12);
  EXPECT_DOUBLE_EQ(sec.log_std, s.log_std);
  EXPECT_EQ(ComputeTimeStats({}).n, 0);
}

TEST(ProfileTest, WireKeysRoundTrip) {
  EXPECT_EQ(AllWireKeys().size(), 6u);
  for (const std::string& k : AllWireKeys()) {
    auto f = ParseWireKey(k);
    ASSERT_TRUE(f.ok()) << k;
    EXPECT_EQ(WireKey(f->first, f->second), k);
  }
  EXPECT_EQ(WireKey(WireEncoding::kInt8, WireCompression::kZstd), "int8+zstd");
  EXPECT_FALSE(ParseWireKey("bf16").ok());
  EXPECT_FALSE(ParseWireKey("fp32+gzip").ok());
}

Profile Sample() {
  Profile p;
  p.model_name = "m";
  p.model_version = "3";
  p.architecture = "resnet18";
  p.host = "edge";
  p.threads = 2;
  p.created = "2026-11-27T00:00:00Z";
  p.samples = 4;
  p.calibration_samples = 10;
  p.input_shape = {3, 32, 32};
  p.num_classes = 10;
  p.preprocess_ms = ComputeTimeStats({0.1, 0.2});
  p.input_wire["fp32"] = {12288, 0.01, 0.02};
  p.input_wire["int8"] = {3072, 0.03, 0.04};
  const char* cls[] = {"Conv2d", "BatchNorm2d", "ReLU", "Identity", "BasicBlock", "BasicBlock"};
  for (int i = 0; i < 6; ++i) {
    LayerProfile l;
    l.index = i;
    l.class_name = cls[i];
    l.key = "layer_" + std::to_string(i) + "_" + cls[i] + "_" + (i == 5 ? "2" : "1");
    l.ms = ComputeTimeStats({0.5 + i, 0.7 + i});
    l.output_shape = {32, 32, 32};
    l.param_bytes = 100 * i;
    l.wire["fp32"] = {131072.0 / (i + 1), 0.05, 0.06};
    l.wire["int8"] = {32768.0 / (i + 1), 0.07, 0.08};
    p.layers.push_back(l);
  }
  for (int g = 0; g < 2; ++g) {
    const int layer = g == 0 ? 4 : 5;
    p.heads.push_back({g, layer, "gate_" + std::to_string(g) + "_layer_" + std::to_string(layer) + "_ClassifierHead_1",
                       ComputeTimeStats({0.05, 0.06})});
    ExitProfile e;
    e.exit_index = g;
    e.layer = layer;
    e.threshold = g == 0 ? 0.9f : 0.0f;
    e.single_ms = ComputeTimeStats({1.0 + g, 1.5 + g});
    e.share = g == 0 ? 0.6 : 0.4;
    e.accuracy = g == 0 ? 0.95 : 0.7;
    p.exits.push_back(e);
  }
  p.full_ms = p.exits.back().single_ms;
  p.eenn_ms = ComputeTimeStats({1.2, 1.8});
  return p;
}

TEST(ProfileTest, JsonHasTheReferenceKeysInSeconds) {
  const Profile p = Sample();
  json j = json::parse(ProfileToJson(p));
  for (const char* key : {"execution_time", "memory", "backbone_execution_time", "backbone_output_memory",
                          "gate_execution_time", "execution_time_gate_0_layer_4",
                          "execution_time_gate_1_layer_5", "eenn"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  const json& l4 = j["backbone_execution_time"]["layer_4_BasicBlock_1"];
  for (const char* stat : {"mean", "std", "var", "min", "max", "log_mean", "log_std", "log_var"}) {
    EXPECT_TRUE(l4.contains(stat)) << stat;
  }
  EXPECT_EQ(l4.size(), 8u);  // exactly the reference's statistics
  EXPECT_NEAR(l4["mean"].get<double>(), 4.6e-3, 1e-12);  // (4.5 + 4.7) / 2 ms, in seconds
  EXPECT_TRUE(j["backbone_execution_time"].contains("layer_5_BasicBlock_2"));
  EXPECT_DOUBLE_EQ(j["backbone_output_memory"]["layer_0_Conv2d_1"].get<double>(), 131072);
  EXPECT_TRUE(j["gate_execution_time"].contains("gate_1_layer_5_ClassifierHead_1"));
  EXPECT_NEAR(j["execution_time_gate_1_layer_5"]["mean"].get<double>(), 2.25e-3, 1e-12);
  EXPECT_EQ(j["memory"]["model"].get<int64_t>(), 100 * (0 + 1 + 2 + 3 + 4 + 5));
  EXPECT_EQ(j["memory"]["output"].get<int64_t>(), 40);
}

TEST(ProfileTest, EennSectionRoundTrips) {
  const Profile p = Sample();
  auto back = ProfileFromJson(ProfileToJson(p));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->model_name, "m");
  EXPECT_EQ(back->model_version, "3");
  EXPECT_EQ(back->host, "edge");
  EXPECT_EQ(back->num_layers(), 6);
  EXPECT_EQ(back->num_classes, 10);
  EXPECT_EQ(back->layers[5].key, "layer_5_BasicBlock_2");
  EXPECT_DOUBLE_EQ(back->layers[2].ms.mean, p.layers[2].ms.mean);
  EXPECT_DOUBLE_EQ(back->layers[2].ms.p90, p.layers[2].ms.p90);
  EXPECT_EQ(back->layers[3].output_shape, (std::vector<int64_t>{32, 32, 32}));
  EXPECT_DOUBLE_EQ(back->layers[1].wire.at("int8").bytes, 16384);
  EXPECT_DOUBLE_EQ(back->exits[0].share, 0.6);
  EXPECT_DOUBLE_EQ(back->exits[1].accuracy, 0.7);
  EXPECT_FLOAT_EQ(back->exits[0].threshold, 0.9f);
  EXPECT_DOUBLE_EQ(back->heads[1].ms.mean, p.heads[1].ms.mean);
  EXPECT_DOUBLE_EQ(back->eenn_ms.mean, 1.5);
  // The tensor sent at a split: the input at 0, else the previous layer's output.
  EXPECT_DOUBLE_EQ(back->SplitWire(0, "fp32")->bytes, 12288);
  EXPECT_DOUBLE_EQ(back->SplitWire(3, "int8")->bytes, 32768.0 / 3);
  EXPECT_EQ(back->SplitWire(6, "fp32").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(back->SplitWire(2, "fp16").status().code(), absl::StatusCode::kNotFound);
}

TEST(ProfileTest, BadProfilesNameTheField) {
  json j = json::parse(ProfileToJson(Sample()));
  auto expect_error = [](const json& doc, const std::string& needle) {
    auto r = ProfileFromJson(doc.dump());
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
  };
  json a = j;
  a["eenn"]["layers"][2].erase("ms");
  expect_error(a, "eenn.layers[2].ms");
  json b = j;
  b["eenn"]["layers"][1]["wire"]["fp32"]["bytes"] = "many";
  expect_error(b, "eenn.layers[1].wire.fp32.bytes");
  json c = j;
  c["eenn"]["exits"][0]["layer"] = 9;
  expect_error(c, "eenn.exits[0]");
  json d = j;
  d["eenn"]["input_wire"]["bf16"] = d["eenn"]["input_wire"]["fp32"];
  expect_error(d, "bf16");
  json e = j;
  e["eenn"]["exits"][1]["layer"] = 4;  // not the last layer, and not after exit 0
  expect_error(e, "eenn.exits[1]");
  json f = j;
  f.erase("eenn");
  expect_error(f, "missing eenn");
  EXPECT_FALSE(ProfileFromJson("{not json").ok());
  EXPECT_EQ(ReadProfile("/nonexistent/profile_summary.json").status().code(), absl::StatusCode::kNotFound);

  testing::TempDir dir;
  testing::WriteAll(dir.Join("p.json"), ProfileToJson(Sample()));
  auto ok = ReadProfile(dir.Join("p.json"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->exits.size(), 2u);
}

}  // namespace
}  // namespace eenn::common
