#include "device/server_load.h"

#include <gtest/gtest.h>

namespace eenn::device {
namespace {

ServerLoadReport Load(int depth, int capacity, double rate) { return ServerLoadReport{depth, capacity, rate}; }

TEST(ServerLoadGateTest, OffloadsWhileTheExpectedRoundTripFitsTheBudget) {
  ServerLoadGate gate(ServerLoadOptions{});
  // Nothing observed yet: offload (the first replies teach the gate).
  EXPECT_TRUE(gate.Decide(absl::Milliseconds(50)).offload);
  EXPECT_FALSE(gate.state().observed);
  // 4 ms round trips, 1 ms of them queueing, an empty queue.
  for (int i = 0; i < 5; ++i) gate.ObserveOffload(4000, 1000, Load(0, 256, 1000));
  auto s = gate.state();
  EXPECT_TRUE(s.observed);
  EXPECT_NEAR(s.base_ms, 3.0, 1e-9);
  EXPECT_NEAR(s.wait_ms, 1.0, 1e-9);
  auto v = gate.Decide(absl::Milliseconds(50));
  EXPECT_TRUE(v.offload);
  EXPECT_NEAR(v.expected_ms, 4.0, 1e-9);
  EXPECT_FALSE(gate.declining());
  // 5 ms fits (4 <= 0.8 x 5); 4.5 ms does not (4 > 3.6).
  EXPECT_TRUE(gate.Decide(absl::Milliseconds(5)).offload);
  v = gate.Decide(absl::Microseconds(4500));
  EXPECT_FALSE(v.offload);
  EXPECT_NE(v.reason.find("expected answer in 4.0 ms, budget 4.5 ms"), std::string::npos) << v.reason;
  EXPECT_TRUE(v.started_declining);  // the device's monitor starts refreshing the load
  EXPECT_TRUE(gate.declining());
  v = gate.Decide(absl::Microseconds(4500));
  EXPECT_FALSE(v.offload);
  EXPECT_FALSE(v.started_declining);
  EXPECT_EQ(gate.state().declined, 2);
  // The next request with room offloads again.
  EXPECT_TRUE(gate.Decide(absl::Milliseconds(50)).offload);
  EXPECT_FALSE(gate.declining());
}

TEST(ServerLoadGateTest, ReportedQueueOverServiceRateIsTheExpectedWait) {
  ServerLoadGate gate(ServerLoadOptions{});
  // The reply says 50 requests wait and the server serves 200 samples/s: 250 ms.
  gate.ObserveOffload(5000, 2000, Load(50, 256, 200));
  auto s = gate.state();
  EXPECT_NEAR(s.wait_ms, 250.0, 1e-9);
  EXPECT_NEAR(s.base_ms, 3.0, 1e-9);
  EXPECT_EQ(s.queue_depth, 50);
  EXPECT_DOUBLE_EQ(s.service_rate, 200);
  EXPECT_FALSE(gate.Decide(absl::Milliseconds(100)).offload);
  EXPECT_TRUE(gate.Decide(absl::Seconds(1)).offload);  // a roomy budget
  // A report of a queue at an unknown rate says nothing about the wait; an
  // empty queue says there is none.
  gate.ObserveReport(Load(30, 256, 0));
  EXPECT_NEAR(gate.state().wait_ms, 250.0, 1e-9);
  EXPECT_EQ(gate.state().queue_depth, 30);
  gate.ObserveReport(Load(0, 256, 0));
  EXPECT_NEAR(gate.state().wait_ms, 0.7 * 250.0, 1e-9);
  // A measured queue wait longer than the reported queue suggests counts.
  gate.ObserveOffload(400000, 390000, Load(1, 256, 1000));
  EXPECT_NEAR(gate.state().wait_ms, 0.7 * 0.7 * 250.0 + 0.3 * 390.0, 1e-9);
}

TEST(ServerLoadGateTest, NearlyFullServerQueueIsDeclinedWhateverTheBudget) {
  ServerLoadGate gate(ServerLoadOptions{});
  gate.ObserveOffload(2000, 0, Load(0, 100, 0));  // no rate known yet
  EXPECT_TRUE(gate.Decide(absl::Seconds(10)).offload);
  gate.ObserveReport(Load(95, 100, 0));  // 95% >= 90%
  auto v = gate.Decide(absl::Seconds(10));
  EXPECT_FALSE(v.offload);
  EXPECT_EQ(v.reason, "server busy: its queue holds 95 of 100 requests");
  gate.ObserveReport(Load(89, 100, 0));
  EXPECT_TRUE(gate.Decide(absl::Seconds(10)).offload);
  // A RESOURCE_EXHAUSTED refusal counts as a full queue until the next report.
  gate.ObserveOverloaded();
  EXPECT_EQ(gate.state().queue_depth, 100);
  EXPECT_FALSE(gate.Decide(absl::Seconds(10)).offload);
  gate.ObserveReport(Load(3, 100, 0));
  EXPECT_TRUE(gate.Decide(absl::Seconds(10)).offload);
  // Refused before any report: the capacity is unknown, the queue still full.
  ServerLoadGate fresh(ServerLoadOptions{});
  fresh.ObserveOverloaded();
  EXPECT_FALSE(fresh.Decide(absl::Seconds(10)).offload);
}

TEST(ServerLoadGateTest, TimeoutIsLoadAndReportsBringTheEstimateBack) {
  ServerLoadGate gate(ServerLoadOptions{});
  gate.ObserveOffload(3000, 0, Load(0, 256, 500));
  // An offload ran out of its 200 ms: the answer would have come later.
  gate.ObserveTimeout(absl::Milliseconds(200));
  EXPECT_NEAR(gate.state().expected_ms, 200.0, 1e-9);
  EXPECT_FALSE(gate.Decide(absl::Milliseconds(100)).offload);
  // A timeout never lowers the estimate.
  gate.ObserveTimeout(absl::Milliseconds(20));
  EXPECT_NEAR(gate.state().expected_ms, 200.0, 1e-9);
  // The monitor's reports say the queue is empty again.
  int reports = 0;
  while (gate.state().expected_ms > 0.8 * 100 && reports < 50) {
    gate.ObserveReport(Load(0, 256, 500));
    ++reports;
  }
  EXPECT_EQ(reports, 3);  // 197 ms x 0.7^3 = 67.6 ms, plus 3 ms base, under 80 ms
  EXPECT_TRUE(gate.Decide(absl::Milliseconds(100)).offload);
  EXPECT_FALSE(gate.declining());
}

TEST(ServerLoadGateTest, ARoundTripThatRoseIsMeasuredAgain) {
  ServerLoadGate gate(ServerLoadOptions{});
  absl::Time t = absl::FromUnixSeconds(1000);
  // One offload, then a slow answer (a slow batch, a congested link): 60 ms,
  // none of it in the server's queue.
  EXPECT_TRUE(gate.Decide(absl::Milliseconds(45), -1, t).offload);
  gate.ObserveOffload(60000, 0, Load(0, 256, 500));
  // A 45 ms budget allows 36 ms: declined, and the server's reports (an empty
  // queue) do not lower the round trip's fixed part.
  for (int i = 1; i <= 5; ++i) {
    gate.ObserveReport(Load(0, 256, 500));
    auto v = gate.Decide(absl::Milliseconds(45), -1, t + absl::Milliseconds(i));
    EXPECT_FALSE(v.offload) << i;
    EXPECT_NE(v.reason.find("expected answer in 60.0 ms, budget 45.0 ms"), std::string::npos) << v.reason;
  }
  // explore_interval (250 ms) after the last offload one goes, to measure it
  // again; the next waits for the answer.
  auto v = gate.Decide(absl::Milliseconds(45), -1, t + absl::Milliseconds(250));
  EXPECT_TRUE(v.offload);
  EXPECT_TRUE(v.explore);
  EXPECT_FALSE(gate.Decide(absl::Milliseconds(45), -1, t + absl::Milliseconds(251)).offload);
  // The link is quick again (5 ms): 0.7 x 60 + 0.3 x 5 = 43.5 ms, still over.
  gate.ObserveOffload(5000, 0, Load(0, 256, 500));
  EXPECT_NEAR(gate.state().base_ms, 43.5, 1e-9);
  EXPECT_FALSE(gate.Decide(absl::Milliseconds(45), -1, t + absl::Milliseconds(300)).offload);
  // The next exploration brings it under: 0.7 x 43.5 + 0.3 x 5 = 31.95 ms.
  v = gate.Decide(absl::Milliseconds(45), -1, t + absl::Milliseconds(500));
  EXPECT_TRUE(v.explore);
  gate.ObserveOffload(5000, 0, Load(0, 256, 500));
  v = gate.Decide(absl::Milliseconds(45), -1, t + absl::Milliseconds(501));
  EXPECT_TRUE(v.offload);
  EXPECT_FALSE(v.explore);
  EXPECT_FALSE(gate.declining());
  // A queue that makes the answer late is the reports' to follow: no
  // exploration into it (the wait alone is over the budget).
  for (int i = 0; i < 5; ++i) gate.ObserveReport(Load(40, 256, 500));  // 80 ms of queue
  ASSERT_GT(gate.state().wait_ms, 36);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(gate.Decide(absl::Milliseconds(45), -1, t + absl::Seconds(2 + i)).offload) << i;
  }
}

TEST(ServerLoadGateTest, FinishesLocallyWhenTheDeviceIsTheQuicker) {
  ServerLoadGate gate(ServerLoadOptions{});
  absl::Time t = absl::FromUnixSeconds(1000);
  // Round trips of 7 ms, 5 of them in the server's queue.
  for (int i = 0; i < 5; ++i) gate.ObserveOffload(7000, 5000, Load(2, 256, 400));
  ASSERT_NEAR(gate.state().expected_ms, 7.0, 1e-9);
  // Nothing known about finishing locally from split 4: offload (the budget allows).
  EXPECT_TRUE(gate.Decide(absl::Milliseconds(100), 4, t).offload);
  EXPECT_DOUBLE_EQ(gate.LocalMs(4), 0);
  // The device finishes from split 4 in 3 ms: quicker than the server's 7.
  gate.ObserveLocal(4, 3000);
  EXPECT_NEAR(gate.LocalMs(4), 3.0, 1e-9);
  auto v = gate.Decide(absl::Milliseconds(100), 4, t + absl::Milliseconds(1));
  EXPECT_FALSE(v.offload);
  EXPECT_NEAR(v.local_ms, 3.0, 1e-9);
  EXPECT_EQ(v.reason, "server busy: expected answer in 7.0 ms, finishing here takes 3.0 ms");
  EXPECT_TRUE(v.started_declining);
  EXPECT_EQ(gate.state().declined_local_faster, 1);
  // Other splits, and callers that give none, are not compared.
  EXPECT_TRUE(gate.Decide(absl::Milliseconds(100), 6, t + absl::Milliseconds(2)).offload);
  EXPECT_TRUE(gate.Decide(absl::Milliseconds(100), -1, t + absl::Milliseconds(3)).offload);
  // Declined again until explore_interval (250 ms) after the last offload:
  // then one goes, to keep the round trip measured, and the next waits again.
  EXPECT_FALSE(gate.Decide(absl::Milliseconds(100), 4, t + absl::Milliseconds(252)).offload);
  v = gate.Decide(absl::Milliseconds(100), 4, t + absl::Milliseconds(253));
  EXPECT_TRUE(v.offload);
  EXPECT_TRUE(v.explore);
  EXPECT_FALSE(gate.Decide(absl::Milliseconds(100), 4, t + absl::Milliseconds(254)).offload);
  // Local finishes are smoothed like the round trips: 0.7 x 3 + 0.3 x 20 = 8.1 ms.
  gate.ObserveLocal(4, 20000);
  EXPECT_NEAR(gate.LocalMs(4), 8.1, 1e-9);
  v = gate.Decide(absl::Milliseconds(100), 4, t + absl::Milliseconds(255));
  EXPECT_TRUE(v.offload);
  EXPECT_FALSE(v.explore);
  // A server whose queue empties is quicker again: 2 ms round trips against 2.78 ms.
  for (int i = 0; i < 3; ++i) gate.ObserveLocal(4, 0);
  ASSERT_NEAR(gate.LocalMs(4), 8.1 * 0.343, 1e-9);
  EXPECT_FALSE(gate.Decide(absl::Milliseconds(100), 4, t + absl::Milliseconds(256)).offload);
  for (int i = 0; i < 10; ++i) gate.ObserveReport(Load(0, 256, 400));
  EXPECT_TRUE(gate.Decide(absl::Milliseconds(100), 4, t + absl::Milliseconds(257)).offload);
  // An idle server is offloaded to even when the device would be quicker:
  // whether the split pays at all is the planner's question, not the load's.
  ServerLoadGate idle(ServerLoadOptions{});
  for (int i = 0; i < 5; ++i) idle.ObserveOffload(7000, 0, Load(0, 256, 400));
  idle.ObserveLocal(4, 1000);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(idle.Decide(absl::Milliseconds(100), 4, t + absl::Milliseconds(i)).offload);
  // A factor of 0 turns the comparison off.
  ServerLoadOptions o;
  o.local_factor = 0;
  ServerLoadGate off(o);
  off.ObserveOffload(7000, 5000, Load(2, 256, 400));
  off.ObserveLocal(4, 1000);
  EXPECT_TRUE(off.Decide(absl::Milliseconds(100), 4, t).offload);
  EXPECT_TRUE(off.Decide(absl::Milliseconds(100), 4, t + absl::Milliseconds(1)).offload);
}

TEST(ServerLoadGateTest, DisabledGateAlwaysOffloads) {
  ServerLoadOptions o;
  o.enabled = false;
  ServerLoadGate gate(o);
  gate.ObserveOffload(900000, 890000, Load(255, 256, 10));
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(gate.Decide(absl::Milliseconds(10)).offload);
  EXPECT_EQ(gate.state().declined, 0);
  EXPECT_FALSE(gate.declining());
  EXPECT_GT(gate.state().expected_ms, 800);  // still estimated, for the metrics
}

}  // namespace
}  // namespace eenn::device
