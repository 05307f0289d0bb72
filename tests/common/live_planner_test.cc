// Live planning: link estimates from round trips, server speed, and split
// decisions with hysteresis, on a hand-made profile whose best split is known
// at each bandwidth.
#include "common/live_planner.h"

#include <gtest/gtest.h>

#include <cmath>

namespace eenn::common {
namespace {

TimeStats Ms(double mean) {
  TimeStats t;
  t.n = 10;
  t.mean = t.min = t.max = t.p50 = t.p90 = t.p99 = mean;
  return t;
}

// Two layers, an exit on each (the second is the final classifier). Device:
// 1 ms and 10 ms per layer; server: 0.1 and 1 ms. Half the samples leave at
// exit 0. Split 0 sends 100,000 bytes, split 1 sends 1,000.
Profile Toy(bool server) {
  Profile p;
  p.model_name = "toy";
  p.model_version = "1";
  p.architecture = "toynet";
  p.input_wire["fp32"] = {100000, 0, 0};
  const double ms[2] = {server ? 0.1 : 1.0, server ? 1.0 : 10.0};
  for (int i = 0; i < 2; ++i) {
    LayerProfile l;
    l.index = i;
    l.ms = Ms(ms[i]);
    l.wire["fp32"] = {i == 0 ? 1000.0 : 10.0, 0, 0};
    p.layers.push_back(l);
    p.heads.push_back({i, i, "", Ms(0)});
    ExitProfile e;
    e.exit_index = i;
    e.layer = i;
    e.share = 0.5;
    p.exits.push_back(e);
  }
  return p;
}

// Expected latency per split (RTT r ms, bandwidth b Mbit/s, overhead 0):
//   s=0: 1.0 * (r + 100000*8/(b*1000)) + 0.1 + 0.5*1
//   s=1: 1 + 0.5 * (r + 1000*8/(b*1000)) + 0.5*1
//   s=2: 1 + 0.5*10 = 6
// With r = 1: at 1 Mbit/s s=1 costs 1 + 0.5*9 + 0.5 = 6.0 and s=2 costs 6.0;
// at 10 Mbit/s s=1 costs 1 + 0.5*1.8 + 0.5 = 2.4 and s=0 costs 81.6;
// at 10,000 Mbit/s s=0 costs 1 + 0.08 + 0.6 = 1.68, s=1 costs 1.5 + 0.5*1.0008 = 2.0004.

LinkEstimatorOptions Options() {
  LinkEstimatorOptions o;
  o.half_life_s = 1.0;
  o.initial.bandwidth_mbps = 100;
  o.initial.rtt_ms = 1;
  o.initial.overhead_bytes = 0;
  return o;
}

TEST(TimeEwmaTest, HalfLifeWeighsOldValues) {
  TimeEwma e(2.0);
  EXPECT_FALSE(e.has_value());
  e.Add(10, 0);
  EXPECT_DOUBLE_EQ(e.value(), 10);
  e.Add(20, 2.0);  // one half-life later: equal weights
  EXPECT_DOUBLE_EQ(e.value(), 15);
  e.Add(15, 102.0);  // long after: the old value is forgotten (up to the 0.9 cap of a burst)
  EXPECT_NEAR(e.value(), 15, 1e-9);
  e.Add(25, 102.0);  // same instant: still moves by a tenth
  EXPECT_NEAR(e.value(), 16, 1e-9);
}

TEST(LinkEstimatorTest, SeparatesRttFromBandwidth) {
  LinkEstimator est(Options());
  EXPECT_DOUBLE_EQ(est.link().bandwidth_mbps, 100);  // the initial guess until traffic
  // Pings: 0.5 ms of network time (server spent 0.2 of 0.7 ms).
  for (int i = 0; i < 5; ++i) est.AddRoundTrip(0, 0.7, 0.2, i * 0.1);
  EXPECT_NEAR(est.link().rtt_ms, 0.5, 1e-9);
  // 100,000 bytes at 10 Mbit/s take 80 ms; the server spent 3 ms.
  for (int i = 0; i < 5; ++i) est.AddRoundTrip(100000, 0.5 + 80 + 3, 3, 1 + i * 0.1);
  EXPECT_NEAR(est.link().bandwidth_mbps, 10, 1e-6);
  EXPECT_NEAR(est.link().rtt_ms, 0.5, 1e-9);
  EXPECT_EQ(est.round_trips(), 10);
  // Garbage is ignored.
  est.AddRoundTrip(100, -1, 0, 2);
  est.AddRoundTrip(100, std::nan(""), 0, 2);
  EXPECT_NEAR(est.link().bandwidth_mbps, 10, 1e-6);
}

TEST(LinkEstimatorTest, FollowsARateChange) {
  LinkEstimator est(Options());
  for (int i = 0; i < 20; ++i) est.AddRoundTrip(0, 1, 0, i * 0.05);
  double t = 1;
  for (; t < 5; t += 0.1) est.AddRoundTrip(10000, 1 + 8, 0, t);  // 10 Mbit/s
  EXPECT_NEAR(est.link().bandwidth_mbps, 10, 1e-6);
  for (; t < 7; t += 0.1) est.AddRoundTrip(10000, 1 + 0.8, 0, t);  // now 100 Mbit/s
  // Averaged in log space: two half-lives later the estimate is 10^(3/4) of
  // the old rate, whether the rate rose or fell.
  EXPECT_GT(est.link().bandwidth_mbps, 50);
  for (; t < 11; t += 0.1) est.AddRoundTrip(10000, 1 + 0.8, 0, t);
  // Six half-lives later the old rate weighs 1/64: within 20% of the new rate.
  EXPECT_GT(est.link().bandwidth_mbps, 80);
  EXPECT_LT(est.link().bandwidth_mbps, 100 + 1e-6);
}

TEST(LinkEstimatorTest, TinyTransfersBoundTheRateFromBelow) {
  LinkEstimator est(Options());
  for (int i = 0; i < 10; ++i) est.AddRoundTrip(0, 1, 0, i * 0.1);
  // A round trip no slower than a ping: the link is fast, not infinitely fast.
  for (int i = 0; i < 10; ++i) est.AddRoundTrip(1000, 1.0, 0, 1 + i * 0.1);
  const double bw = est.link().bandwidth_mbps;
  EXPECT_TRUE(std::isfinite(bw));
  EXPECT_NEAR(bw, 1000 * 0.008 / 0.05, 1e-6);  // 1000 bytes in min_transfer_ms
}

TEST(LinkEstimatorTest, ServerSpeedAndQueue) {
  LinkEstimator est(Options());
  EXPECT_DOUBLE_EQ(est.server_speed_factor(), 1);
  EXPECT_DOUBLE_EQ(est.server_queue_ms(), 0);
  for (int i = 0; i < 10; ++i) {
    est.AddServerCompute(3, 1.5, i * 0.1);
    est.AddServerQueue(4, i * 0.1);
  }
  EXPECT_NEAR(est.server_speed_factor(), 2, 1e-9);
  EXPECT_NEAR(est.server_queue_ms(), 4, 1e-9);
  est.AddServerCompute(0, 1, 2);  // ignored
  EXPECT_NEAR(est.server_speed_factor(), 2, 1e-9);
}

TEST(SplitControllerTest, MovesToTheBestSplitWithHysteresis) {
  SplitControllerOptions o;
  o.min_gain_ms = 0.2;
  o.min_gain_ratio = 0.05;
  o.min_dwell_s = 1.0;
  o.plan.include_preprocess = false;
  auto c = SplitController::Create(Toy(false), Toy(true), o);
  ASSERT_TRUE(c.ok()) << c.status();
  LinkEstimator est(Options());
  double t = 0;
  for (int i = 0; i < 10; ++i, t += 0.1) est.AddRoundTrip(0, 1, 0, t);
  // 10 Mbit/s: 1000 bytes in 0.8 ms.
  for (int i = 0; i < 20; ++i, t += 0.1) est.AddRoundTrip(1000, 1.8, 0, t);
  const double first_move = t;
  auto d = c->Decide(est, 2, t);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->split, 1);  // 2.4 ms against 6 ms on the device
  EXPECT_TRUE(d->changed);
  EXPECT_NEAR(d->plan.candidates[1].expected_ms, 2.4, 1e-6);
  EXPECT_NEAR(d->current_expected_ms, 6.0, 1e-9);

  // The link becomes very fast: split 0 is now best (1.68 vs 2.0 ms), but the
  // move waits out the dwell time after the last one.
  for (int i = 0; i < 100; ++i, t += 0.005) est.AddRoundTrip(100000, 1.08, 0, t);  // 10 Gbit/s
  EXPECT_GT(est.link().bandwidth_mbps, 9000);
  ASSERT_LT(t - first_move, o.min_dwell_s);
  d = c->Decide(est, 1, t);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->plan.best_split, 0);
  EXPECT_EQ(d->split, 1);
  EXPECT_FALSE(d->changed);
  t = first_move + o.min_dwell_s + 1e-6;
  d = c->Decide(est, 1, t);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->split, 0);
  EXPECT_TRUE(d->changed);

  // A gain below the margins does not move the split.
  SplitControllerOptions strict = o;
  strict.min_gain_ms = 100;
  auto c2 = SplitController::Create(Toy(false), Toy(true), strict);
  ASSERT_TRUE(c2.ok());
  d = c2->Decide(est, 2, t + 10);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->split, 2);
  EXPECT_FALSE(d->changed);
}

TEST(SplitControllerTest, HypotheticalPlansAndValidation) {
  SplitControllerOptions o;
  o.plan.include_preprocess = false;
  auto c = SplitController::Create(Toy(false), Toy(true), o);
  ASSERT_TRUE(c.ok());
  LinkEstimator est(Options());
  for (int i = 0; i < 10; ++i) est.AddRoundTrip(0, 1, 0, i * 0.1);
  auto slow = c->PlanFor(est, 1.0, std::nullopt);
  ASSERT_TRUE(slow.ok()) << slow.status();
  EXPECT_NEAR(slow->candidates[1].expected_ms, 6.0, 1e-9);
  EXPECT_NEAR(slow->candidates[2].expected_ms, 6.0, 1e-9);
  auto fast = c->PlanFor(est, 10000.0, std::nullopt);
  ASSERT_TRUE(fast.ok());
  EXPECT_EQ(fast->best_split, 0);
  EXPECT_NEAR(fast->candidates[0].expected_ms, 1.68, 1e-9);
  EXPECT_FALSE(c->PlanFor(est, -1.0, std::nullopt).ok());
  // A slower server (measured at 5x its profile) keeps work on the device.
  for (int i = 0; i < 30; ++i) est.AddServerCompute(5, 1, 1 + i * 0.1);
  auto loaded = c->PlanFor(est, 10000.0, std::nullopt);
  ASSERT_TRUE(loaded.ok());
  EXPECT_NE(loaded->best_split, 0);

  Profile other = Toy(true);
  other.model_version = "2";
  EXPECT_EQ(SplitController::Create(Toy(false), other, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.min_dwell_s = -1;
  EXPECT_EQ(SplitController::Create(Toy(false), Toy(true), o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace eenn::common
