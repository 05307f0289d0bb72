#include "common/planner.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace eenn::common {
namespace {

TimeStats Ms(double mean) {
  TimeStats t;
  t.n = 10;
  t.mean = t.min = t.max = t.p50 = t.p90 = t.p99 = mean;
  return t;
}

// A 4-layer network with an early exit after layer 1 and the final classifier
// after layer 3. Split s sends the input of layer s; split_bytes[s] is its
// size (s = 0: the input).
struct ProfileSpec {
  std::vector<double> layer_ms;
  std::vector<double> head_ms;
  std::vector<int> exit_layers = {1, 3};
  std::vector<double> shares = {0.6, 0.4};
  std::vector<double> split_bytes;
  double encode_ms = 0;
  double decode_ms = 0;
  double preprocess_ms = 0;
  std::string host;
};

Profile Build(const ProfileSpec& spec) {
  Profile p;
  p.model_name = "toy";
  p.model_version = "1";
  p.architecture = "toynet";
  p.host = spec.host;
  p.preprocess_ms = Ms(spec.preprocess_ms);
  auto wire = [&](size_t s) {
    return std::map<std::string, WireCost>{
        {"fp32", WireCost{spec.split_bytes[s], spec.encode_ms, spec.decode_ms}}};
  };
  p.input_wire = wire(0);
  for (size_t i = 0; i < spec.layer_ms.size(); ++i) {
    LayerProfile l;
    l.index = static_cast<int>(i);
    l.class_name = "Block";
    l.ms = Ms(spec.layer_ms[i]);
    l.wire = wire(i + 1);
    p.layers.push_back(l);
  }
  for (size_t g = 0; g < spec.exit_layers.size(); ++g) {
    HeadProfile h;
    h.exit_index = static_cast<int>(g);
    h.layer = spec.exit_layers[g];
    h.ms = Ms(spec.head_ms[g]);
    p.heads.push_back(h);
    ExitProfile e;
    e.exit_index = static_cast<int>(g);
    e.layer = spec.exit_layers[g];
    e.share = spec.shares[g];
    p.exits.push_back(e);
  }
  return p;
}

// The device is slow and encodes cheaply; the server is fast. Each profile
// also carries a deliberately absurd cost on the side the model must NOT use
// (the device's decode, the server's encode and bytes), so reading the wrong
// profile shows up in the expected times.
Profile Device() {
  ProfileSpec spec;
  spec.layer_ms = {1, 1, 4, 4};
  spec.head_ms = {0.5, 0.5};
  spec.split_bytes = {48000, 32000, 8000, 8000, 40};
  spec.encode_ms = 0.1;
  spec.decode_ms = 100;
  spec.preprocess_ms = 0.5;
  spec.host = "device";
  return Build(spec);
}

Profile Server() {
  ProfileSpec spec;
  spec.layer_ms = {0.1, 0.1, 0.2, 0.2};
  spec.head_ms = {0.05, 0.05};
  spec.split_bytes = {1e9, 1e9, 1e9, 1e9, 1e9};
  spec.encode_ms = 100;
  spec.decode_ms = 0.05;
  spec.preprocess_ms = 100;
  spec.host = "server";
  return Build(spec);
}

LinkEstimate Link(double mbps) {
  LinkEstimate link;
  link.bandwidth_mbps = mbps;
  link.rtt_ms = 1;
  link.overhead_bytes = 300;
  return link;
}

Plan MustPlan(double mbps, const PlanOptions& options = {}) {
  absl::StatusOr<Plan> plan = PlanSplits(Device(), Server(), Link(mbps), options);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *plan : Plan{};
}

// Hand computation, shares 0.6 (exit at layer 1) and 0.4 (final exit at
// layer 3): reach = {1, 1, 0.4, 0.4, 0} for layers 0..3 and past the end.
// Per offload: RTT 1 + codec (0.1 device encode + 0.05 server decode) = 1.15
// ms plus (bytes + 300) * 8 / (B * 1000) ms.
//   s=0: device 0.5 (preprocess)
//        server 0.1 + 0.1 + 0.4*0.2 + 0.4*0.2 + 1*0.05 + 0.4*0.05 = 0.43
//        link 1 * (1.15 + 48300*8/(1000B)) = 1.15 + 386.4/B
//        expected 2.08 + 386.4/B
//   s=1: device 0.5 + 1 = 1.5; server 0.33; link 1.15 + 258.4/B
//        expected 2.98 + 258.4/B
//   s=2: device 0.5 + 1 + 1 + 1*0.5 (head 0) = 3.0
//        server 0.4*0.2 + 0.4*0.2 + 0.4*0.05 = 0.18
//        link 0.4 * (1.15 + 8300*8/(1000B)) = 0.46 + 26.56/B
//        expected 3.64 + 26.56/B
//   s=3: device 3.0 + 0.4*4 = 4.6; server 0.4*0.2 + 0.4*0.05 = 0.10
//        link 0.46 + 26.56/B; expected 5.16 + 26.56/B
//   s=4: device 4.6 + 0.4*4 + 0.4*0.5 = 6.4; no link, no server: 6.4
double HandExpected(int split, double b) {
  switch (split) {
    case 0:
      return 2.08 + 386.4 / b;
    case 1:
      return 2.98 + 258.4 / b;
    case 2:
      return 3.64 + 26.56 / b;
    case 3:
      return 5.16 + 26.56 / b;
    default:
      return 6.4;
  }
}

TEST(PlannerTest, ObjectiveNamesRoundTrip) {
  for (PlanObjective o :
       {PlanObjective::kLatency, PlanObjective::kBytes, PlanObjective::kDeviceCompute}) {
    absl::StatusOr<PlanObjective> parsed = ParsePlanObjective(PlanObjectiveName(o));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, o);
  }
  EXPECT_EQ(PlanObjectiveName(PlanObjective::kDeviceCompute), "device_compute");
  absl::StatusOr<PlanObjective> bad = ParsePlanObjective("speed");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("device_compute"), std::string::npos);
}

TEST(PlannerTest, CandidatesMatchTheHandComputation) {
  for (double b : {1.0, 10.0, 100.0, 1000.0}) {
    SCOPED_TRACE(b);
    Plan plan = MustPlan(b);
    ASSERT_EQ(plan.candidates.size(), 5u);
    for (int s = 0; s <= 4; ++s) {
      EXPECT_EQ(plan.candidates[s].split, s);
      EXPECT_NEAR(plan.candidates[s].expected_ms, HandExpected(s, b), 1e-9) << "split " << s;
    }
  }
  Plan plan = MustPlan(100);
  const std::vector<double> device = {0.5, 1.5, 3.0, 4.6, 6.4};
  const std::vector<double> server = {0.43, 0.33, 0.18, 0.10, 0};
  const std::vector<double> link = {1.15 + 3.864, 1.15 + 2.584, 0.46 + 0.2656, 0.46 + 0.2656, 0};
  const std::vector<double> tensor = {48000, 32000, 8000, 8000, 0};
  for (int s = 0; s <= 4; ++s) {
    const SplitCandidate& c = plan.candidates[s];
    EXPECT_NEAR(c.device_ms, device[s], 1e-9) << s;
    EXPECT_NEAR(c.server_ms, server[s], 1e-9) << s;
    EXPECT_NEAR(c.link_ms, link[s], 1e-9) << s;
    EXPECT_NEAR(c.expected_ms, c.device_ms + c.link_ms + c.server_ms, 1e-12) << s;
    EXPECT_DOUBLE_EQ(c.tensor_bytes, tensor[s]) << s;
    EXPECT_TRUE(c.within_bound);
  }
  EXPECT_TRUE(plan.bound_met);
  EXPECT_EQ(plan.best_split, 2);
  EXPECT_EQ(plan.wire, "fp32");
  EXPECT_DOUBLE_EQ(plan.link.bandwidth_mbps, 100);
}

TEST(PlannerTest, SamplesThatLeaveBeforeTheSplitNeverTransmit) {
  Plan plan = MustPlan(100);
  // Splits 0 and 1 come before the first exit (after layer 1): everyone is sent.
  EXPECT_DOUBLE_EQ(plan.candidates[0].offload_share, 1.0);
  EXPECT_DOUBLE_EQ(plan.candidates[1].offload_share, 1.0);
  EXPECT_DOUBLE_EQ(plan.candidates[0].bytes, 48000);
  // Behind the exit only the 40% that did not leave are sent.
  EXPECT_NEAR(plan.candidates[2].offload_share, 0.4, 1e-12);
  EXPECT_NEAR(plan.candidates[2].bytes, 0.4 * 8000, 1e-9);
  EXPECT_NEAR(plan.candidates[3].bytes, 0.4 * 8000, 1e-9);
  // All on device sends nothing.
  EXPECT_EQ(plan.candidates[4].offload_share, 0);
  EXPECT_EQ(plan.candidates[4].bytes, 0);
  EXPECT_EQ(plan.candidates[4].link_ms, 0);
  EXPECT_EQ(plan.candidates[4].server_ms, 0);

  // With no early exits taken everyone who reaches split 2 is sent.
  PlanOptions none;
  none.exit_shares = {0, 1};
  Plan all = MustPlan(100, none);
  EXPECT_DOUBLE_EQ(all.candidates[2].offload_share, 1.0);
  EXPECT_DOUBLE_EQ(all.candidates[2].bytes, 8000);
  // Every sample now also runs layers 2-3 on the device: 0.5 + 1 + 1 + 0.5 + 4 + 4 + 0.5.
  EXPECT_NEAR(all.candidates[4].expected_ms, 11.5, 1e-9);
}

TEST(PlannerTest, BestSplitMovesToTheServerAsBandwidthGrows) {
  // s=2 beats s=4 when 3.64 + 26.56/B < 6.4, i.e. B > 26.56/2.76 = 9.623 Mbit/s;
  // s=0 beats s=2 when 2.08 + 386.4/B < 3.64 + 26.56/B, i.e. B > 359.84/1.56 = 230.67.
  // s=1 and s=3 never win (s=3 is s=2 plus 1.52 ms of device compute).
  EXPECT_EQ(MustPlan(1).best_split, 4);
  EXPECT_EQ(MustPlan(9.5).best_split, 4);
  EXPECT_EQ(MustPlan(9.75).best_split, 2);
  EXPECT_EQ(MustPlan(100).best_split, 2);
  EXPECT_EQ(MustPlan(230).best_split, 2);
  EXPECT_EQ(MustPlan(232).best_split, 0);
  EXPECT_EQ(MustPlan(10000).best_split, 0);
  // At the crossover itself the latencies tie and fewer bytes win: all on device.
  EXPECT_EQ(MustPlan(26.56 / 2.76).best_split, 4);
}

TEST(PlannerTest, LatencyTiesGoToFewerBytesThenTheLargerSplit) {
  // Free layer 0 on both sides makes splits 0 and 1 differ only in what they send.
  Profile device = Device();
  Profile server = Server();
  device.layers[0].ms = Ms(0);
  server.layers[0].ms = Ms(0);
  // At 10^4 Mbit/s, 16300 vs 32300 bytes take 0.01304 vs 0.02584 ms; a
  // slower encode of the input makes up the 0.0128 ms difference, so both
  // cost 0.5 + 0.33 + 1 + 0.1 + 0.05 + 0.02584 = 2.00584 ms (s=2: 2.64 ms).
  device.input_wire["fp32"].bytes = 16000;
  device.input_wire["fp32"].encode_ms += 0.0128;
  absl::StatusOr<Plan> plan = PlanSplits(device, server, Link(1e4), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_NEAR(plan->candidates[0].expected_ms, 2.00584, 1e-9);
  EXPECT_NEAR(plan->candidates[1].expected_ms, 2.00584, 1e-9);
  EXPECT_EQ(plan->best_split, 0);
  // Equal bytes too: keep the work on the device.
  device.input_wire = device.layers[0].wire;
  plan = PlanSplits(device, server, Link(1e4), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->best_split, 1);
}

TEST(PlannerTest, BytesObjectiveHonoursTheBound) {
  // At 100 Mbit/s: expected {5.944, 5.564, 3.9056, 5.4256, 6.4} ms,
  // bytes {48000, 32000, 3200, 3200, 0}.
  PlanOptions options;
  options.objective = PlanObjective::kBytes;
  Plan unbounded = MustPlan(100, options);
  EXPECT_EQ(unbounded.best_split, 4);
  EXPECT_EQ(unbounded.objective, PlanObjective::kBytes);

  options.latency_bound_ms = 6.0;  // excludes s=4 only
  Plan bounded = MustPlan(100, options);
  EXPECT_TRUE(bounded.bound_met);
  EXPECT_FALSE(bounded.candidates[4].within_bound);
  EXPECT_TRUE(bounded.candidates[0].within_bound);
  // s=2 and s=3 both send 3200 bytes; the lower latency (s=2) wins the tie.
  EXPECT_EQ(bounded.best_split, 2);

  options.latency_bound_ms = 3.0;  // nothing is that fast
  Plan unmet = MustPlan(100, options);
  EXPECT_FALSE(unmet.bound_met);
  for (const SplitCandidate& c : unmet.candidates) EXPECT_FALSE(c.within_bound);
  // Falls back to the lowest latency, not to the fewest bytes (s=4).
  EXPECT_EQ(unmet.best_split, 2);
}

TEST(PlannerTest, DeviceComputeObjectiveHonoursTheBound) {
  // Device ms {0.5, 1.5, 3.0, 4.6, 6.4}, expected {5.944, 5.564, 3.9056, 5.4256, 6.4}.
  PlanOptions options;
  options.objective = PlanObjective::kDeviceCompute;
  options.latency_bound_ms = 6.0;
  EXPECT_EQ(MustPlan(100, options).best_split, 0);
  options.latency_bound_ms = 5.7;  // s=0 is 5.944 ms
  EXPECT_EQ(MustPlan(100, options).best_split, 1);
  options.latency_bound_ms = 5.0;  // only s=2
  EXPECT_EQ(MustPlan(100, options).best_split, 2);

  options.include_preprocess = false;
  Plan plan = MustPlan(100, options);
  EXPECT_NEAR(plan.candidates[0].device_ms, 0, 1e-12);
  EXPECT_NEAR(plan.candidates[4].expected_ms, 5.9, 1e-9);
  // Without the 0.5 ms of preprocessing s=1 (5.064 ms) fits a 5.2 ms bound.
  options.latency_bound_ms = 5.2;
  EXPECT_EQ(MustPlan(100, options).best_split, 1);
}

TEST(PlannerTest, ServerSpeedAndOverheadShiftTheChoice) {
  // A 20x slower server: s=2 costs 3.0 + 20*0.18 + 0.7256 = 7.3256 > 6.4.
  PlanOptions slow;
  slow.server_speed_factor = 20;
  Plan plan = MustPlan(100, slow);
  EXPECT_NEAR(plan.candidates[2].server_ms, 3.6, 1e-9);
  EXPECT_EQ(plan.best_split, 4);

  // At 1000 Mbit/s all on server wins (2.4664 vs s=2's 3.66656 ms); 3 ms of
  // server queueing per offload costs s=0 3 ms but s=2 only 0.4 * 3 = 1.2 ms.
  EXPECT_EQ(MustPlan(1000).best_split, 0);
  PlanOptions queued;
  queued.server_overhead_ms = 3;
  plan = MustPlan(1000, queued);
  EXPECT_NEAR(plan.candidates[0].link_ms, 1.15 + 0.3864 + 3, 1e-9);
  EXPECT_NEAR(plan.candidates[2].link_ms, 0.4 * (1.15 + 0.0664 + 3), 1e-9);
  EXPECT_EQ(plan.best_split, 2);
  queued.server_overhead_ms = 10;  // s=2: 3.66656 + 4 > 6.4
  EXPECT_EQ(MustPlan(1000, queued).best_split, 4);
}

void ExpectInvalid(const Profile& device, const Profile& server, const LinkEstimate& link,
                   const PlanOptions& options, const std::string& mention) {
  absl::StatusOr<Plan> plan = PlanSplits(device, server, link, options);
  ASSERT_FALSE(plan.ok()) << "expected an error mentioning " << mention;
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << plan.status();
  EXPECT_NE(plan.status().message().find(mention), std::string::npos) << plan.status();
}

TEST(PlannerTest, RefusesMismatchedProfiles) {
  const LinkEstimate link = Link(100);
  Profile other = Server();
  other.model_name = "other";
  ExpectInvalid(Device(), other, link, {}, "model_name");
  other = Server();
  other.model_version = "2";
  ExpectInvalid(Device(), other, link, {}, "model_version");
  other = Server();
  other.architecture = "resnet";
  ExpectInvalid(Device(), other, link, {}, "architecture");
  other = Server();
  other.layers.pop_back();
  ExpectInvalid(Device(), other, link, {}, "layers");
  other = Server();
  other.exits[0].layer = other.heads[0].layer = 2;
  ExpectInvalid(Device(), other, link, {}, "exits");
}

TEST(PlannerTest, RefusesMissingWireKeys) {
  const LinkEstimate link = Link(100);
  PlanOptions fp16;
  fp16.wire = "fp16";
  ExpectInvalid(Device(), Server(), link, fp16, "fp16");
  Profile server = Server();
  server.layers[1].wire.clear();  // the tensor sent at split 2
  ExpectInvalid(Device(), server, link, {}, "server");
  Profile device = Device();
  device.input_wire.clear();
  ExpectInvalid(device, Server(), link, {}, "split 0");
}

TEST(PlannerTest, RefusesBadShares) {
  const LinkEstimate link = Link(100);
  PlanOptions options;
  options.exit_shares = {1.0};
  ExpectInvalid(Device(), Server(), link, options, "exit_shares");
  options.exit_shares = {1.2, -0.2};
  ExpectInvalid(Device(), Server(), link, options, "exit_shares");
  options.exit_shares = {0.5, 0.4};
  ExpectInvalid(Device(), Server(), link, options, "exit_shares");
  options.exit_shares = {std::nan(""), 1.0};
  ExpectInvalid(Device(), Server(), link, options, "exit_shares");
  // Within 1e-3 of 1 is accepted.
  options.exit_shares = {0.6, 0.4005};
  EXPECT_TRUE(PlanSplits(Device(), Server(), link, options).ok());
  // The device profile's own shares are checked the same way.
  Profile device = Device();
  device.exits[1].share = 0;
  ExpectInvalid(device, Server(), link, {}, "exit shares");
}

TEST(PlannerTest, RefusesABadLink) {
  for (double b : {0.0, -5.0, std::numeric_limits<double>::infinity(), std::nan("")}) {
    ExpectInvalid(Device(), Server(), Link(b), {}, "bandwidth_mbps");
  }
  LinkEstimate link = Link(100);
  link.rtt_ms = -1;
  ExpectInvalid(Device(), Server(), link, {}, "rtt_ms");
  link = Link(100);
  link.overhead_bytes = -1;
  ExpectInvalid(Device(), Server(), link, {}, "overhead_bytes");
  PlanOptions options;
  options.server_speed_factor = 0;
  ExpectInvalid(Device(), Server(), Link(100), options, "server_speed_factor");
}

TEST(PlannerTest, JsonHasTheDocumentedKeys) {
  Plan plan = MustPlan(100);
  nlohmann::json j = nlohmann::json::parse(PlanToJson(plan));
  EXPECT_EQ(j.at("best_split").get<int>(), 2);
  EXPECT_EQ(j.at("objective").get<std::string>(), "latency");
  EXPECT_DOUBLE_EQ(j.at("bandwidth_mbps").get<double>(), 100);
  EXPECT_DOUBLE_EQ(j.at("rtt_ms").get<double>(), 1);
  EXPECT_EQ(j.at("wire").get<std::string>(), "fp32");
  EXPECT_TRUE(j.at("bound_met").get<bool>());
  ASSERT_EQ(j.at("candidates").size(), 5u);
  for (int s = 0; s <= 4; ++s) {
    const nlohmann::json& c = j["candidates"][s];
    for (const char* key : {"split", "expected_ms", "bytes", "offload_share"}) {
      EXPECT_TRUE(c.contains(key)) << key;
    }
    EXPECT_EQ(c["split"].get<int>(), s);
    EXPECT_TRUE(c["expected_ms"].is_number());
    EXPECT_NEAR(c["expected_ms"].get<double>(), HandExpected(s, 100), 1e-9);
  }
}

TEST(PlannerTest, TableMarksTheBestRow) {
  std::string table = FormatPlanTable(MustPlan(100));
  std::istringstream lines(table);
  std::string line;
  int starred = 0;
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] == '*') {
      ++starred;
      EXPECT_EQ(line.substr(0, 7), "*     2") << line;
    }
  }
  EXPECT_EQ(starred, 1) << table;
  EXPECT_NE(table.find("expected ms"), std::string::npos);
  EXPECT_NE(table.find("best split: 2"), std::string::npos) << table;
  EXPECT_NE(FormatPlanTable(MustPlan(1)).find("all-on-device"), std::string::npos);
  EXPECT_NE(FormatPlanTable(MustPlan(10000)).find("all-on-server"), std::string::npos);
  PlanOptions bound;
  bound.latency_bound_ms = 1;
  EXPECT_NE(FormatPlanTable(MustPlan(100, bound)).find("latency bound"), std::string::npos);
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(PlannerTest, SvgHasOneLinePerSeriesAndEscapedLabels) {
  std::vector<std::pair<std::string, Plan>> series = {{"5 Mbit/s", MustPlan(5)},
                                                      {"100 Mbit/s", MustPlan(100)},
                                                      {"<fast> & \"lan\"", MustPlan(1000)}};
  std::string svg = PlotPlansSvg(series, "toy: R&D <split>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(Count(svg, "<polyline"), 3);
  EXPECT_EQ(Count(svg, "<circle"), 3);
  EXPECT_NE(svg.find("100 Mbit/s"), std::string::npos);
  EXPECT_NE(svg.find("&lt;fast&gt; &amp; &quot;lan&quot;"), std::string::npos);
  EXPECT_EQ(svg.find("<fast>"), std::string::npos);
  EXPECT_NE(svg.find("toy: R&amp;D &lt;split&gt;"), std::string::npos);
  // 79 ms at most (5 Mbit/s, s=0) against 2.5 ms at least: a linear axis.
  EXPECT_EQ(svg.find("log scale"), std::string::npos);
  // 388 ms (1 Mbit/s, s=0) against 2.5 ms (1000 Mbit/s) needs a log axis.
  std::string wide = PlotPlansSvg({{"1", MustPlan(1)}, {"1000", MustPlan(1000)}}, "t");
  EXPECT_NE(wide.find("log scale"), std::string::npos);
}

}  // namespace
}  // namespace eenn::common
