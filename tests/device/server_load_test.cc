#include "device/server_load.h"

#include <gtest/gtest.h>

namespace eenn::device {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

ServerLoadReport Load(int depth, int capacity, double rate) { return ServerLoadReport{depth, capacity, rate}; }

TEST(ServerLoadGateTest, OffloadsWhileTheExpectedRoundTripFitsTheBudget) {
  ServerLoadGate gate(ServerLoadOptions{});
  // Nothing observed yet: offload (the first replies teach the gate).
  auto v = gate.Decide(kT0, absl::Milliseconds(50));
  EXPECT_TRUE(v.offload);
  EXPECT_FALSE(v.probe);
  // 4 ms round trips, 1 ms of them queueing, an empty queue.
  for (int i = 0; i < 5; ++i) gate.ObserveOffload(kT0, 4000, 1000, Load(0, 256, 1000));
  auto s = gate.state();
  EXPECT_TRUE(s.observed);
  EXPECT_NEAR(s.base_ms, 3.0, 1e-9);
  EXPECT_NEAR(s.wait_ms, 1.0, 1e-9);
  v = gate.Decide(kT0, absl::Milliseconds(50));
  EXPECT_TRUE(v.offload);
  EXPECT_NEAR(v.expected_ms, 4.0, 1e-9);
  EXPECT_FALSE(gate.declining());
  // A budget the round trip does not fit into with the 0.8 headroom: 4 > 0.8 x 4.5.
  v = gate.Decide(kT0, absl::Microseconds(4500));
  EXPECT_TRUE(v.offload);  // the first decline is let through as a probe
  EXPECT_TRUE(v.probe);
  v = gate.Decide(kT0, absl::Microseconds(4500));
  EXPECT_FALSE(v.offload);
  EXPECT_NE(v.reason.find("expected answer in 4.0 ms, budget 4.5 ms"), std::string::npos) << v.reason;
  EXPECT_TRUE(gate.declining());
}

TEST(ServerLoadGateTest, ReportedQueueOverServiceRateIsTheExpectedWait) {
  ServerLoadGate gate(ServerLoadOptions{});
  // The reply says 50 requests wait and the server serves 200 samples/s: 250 ms.
  gate.ObserveOffload(kT0, 5000, 2000, Load(50, 256, 200));
  auto s = gate.state();
  EXPECT_NEAR(s.wait_ms, 250.0, 1e-9);
  EXPECT_NEAR(s.base_ms, 3.0, 1e-9);
  EXPECT_EQ(s.queue_depth, 50);
  EXPECT_DOUBLE_EQ(s.service_rate, 200);
  // Budget 100 ms: declined after the one probe.
  EXPECT_TRUE(gate.Decide(kT0, absl::Milliseconds(100)).probe);
  auto v = gate.Decide(kT0, absl::Milliseconds(100));
  EXPECT_FALSE(v.offload);
  EXPECT_EQ(gate.state().declined, 1);
  EXPECT_EQ(gate.state().probes, 1);
  // A roomy budget (1 s): offloaded.
  EXPECT_TRUE(gate.Decide(kT0, absl::Seconds(1)).offload);
  // A report of a queue at an unknown rate says nothing about the wait; an
  // empty queue says there is none.
  gate.ObserveReport(kT0, Load(30, 256, 0));
  EXPECT_NEAR(gate.state().wait_ms, 250.0, 1e-9);
  EXPECT_EQ(gate.state().queue_depth, 30);
  gate.ObserveReport(kT0, Load(0, 256, 0));
  EXPECT_NEAR(gate.state().wait_ms, 0.7 * 250.0, 1e-9);
}

TEST(ServerLoadGateTest, NearlyFullServerQueueIsDeclinedWhateverTheBudget) {
  ServerLoadGate gate(ServerLoadOptions{});
  gate.ObserveOffload(kT0, 2000, 0, Load(0, 100, 0));  // no rate known yet
  EXPECT_TRUE(gate.Decide(kT0, absl::Seconds(10)).offload);
  gate.ObserveReport(kT0, Load(95, 100, 0));  // 95% > 90%
  EXPECT_TRUE(gate.Decide(kT0, absl::Seconds(10)).probe);
  auto v = gate.Decide(kT0, absl::Seconds(10));
  EXPECT_FALSE(v.offload);
  EXPECT_EQ(v.reason, "server busy: its queue holds 95 of 100 requests");
  // A RESOURCE_EXHAUSTED refusal counts as a full queue until the next report.
  gate.ObserveReport(kT0, Load(10, 100, 0));
  EXPECT_TRUE(gate.Decide(kT0, absl::Seconds(10)).offload);
  gate.ObserveOverloaded();
  EXPECT_EQ(gate.state().queue_depth, 100);
  EXPECT_FALSE(gate.Decide(kT0 + absl::Milliseconds(1), absl::Seconds(10)).offload);
}

TEST(ServerLoadGateTest, ProbesOneAtATimeEveryIntervalWhileDeclining) {
  ServerLoadOptions o;
  o.probe_interval = absl::Milliseconds(500);
  ServerLoadGate gate(o);
  gate.ObserveOffload(kT0, 300000, 290000, Load(40, 256, 100));  // 300 ms round trips
  const absl::Duration budget = absl::Milliseconds(50);
  auto v = gate.Decide(kT0, budget);
  ASSERT_TRUE(v.probe);
  // While that probe is out, nothing else goes, even after the interval.
  EXPECT_FALSE(gate.Decide(kT0 + absl::Milliseconds(100), budget).offload);
  EXPECT_FALSE(gate.Decide(kT0 + absl::Milliseconds(600), budget).offload);
  gate.ProbeDone();
  // Done, and the interval since the last probe has passed: the next one goes.
  EXPECT_TRUE(gate.Decide(kT0 + absl::Milliseconds(600), budget).probe);
  gate.ProbeDone();
  // Within the interval of that one: declined.
  EXPECT_FALSE(gate.Decide(kT0 + absl::Milliseconds(900), budget).offload);
  EXPECT_TRUE(gate.Decide(kT0 + absl::Milliseconds(1100), budget).probe);
  gate.ProbeDone();
  EXPECT_EQ(gate.state().probes, 3);
  EXPECT_EQ(gate.state().declined, 3);
}

TEST(ServerLoadGateTest, EstimateFollowsTheServerBackWhenItRecovers) {
  ServerLoadGate gate(ServerLoadOptions{});
  gate.ObserveOffload(kT0, 3000, 0, Load(0, 256, 500));
  // A burst: a timeout after 200 ms raises the expected wait to at least that.
  gate.ObserveTimeout(absl::Milliseconds(200));
  EXPECT_GE(gate.state().expected_ms, 200.0);
  EXPECT_TRUE(gate.Decide(kT0, absl::Milliseconds(100)).probe);
  gate.ProbeDone();
  EXPECT_FALSE(gate.Decide(kT0, absl::Milliseconds(100)).offload);
  // The monitor's reports and the probes' replies say the queue is empty again.
  absl::Time t = kT0;
  int reports = 0;
  while (gate.state().expected_ms > 0.8 * 100 && reports < 50) {
    t += absl::Milliseconds(500);
    gate.ObserveReport(t, Load(0, 256, 500));
    ++reports;
  }
  EXPECT_LE(reports, 4);  // 0.7^n of 197 ms under 77 ms: 3 reports
  auto v = gate.Decide(t, absl::Milliseconds(100));
  EXPECT_TRUE(v.offload);
  EXPECT_FALSE(v.probe);
  EXPECT_FALSE(gate.declining());
}

TEST(ServerLoadGateTest, DisabledGateAlwaysOffloads) {
  ServerLoadOptions o;
  o.enabled = false;
  ServerLoadGate gate(o);
  gate.ObserveOffload(kT0, 900000, 890000, Load(255, 256, 10));
  for (int i = 0; i < 10; ++i) {
    auto v = gate.Decide(kT0, absl::Milliseconds(10));
    EXPECT_TRUE(v.offload);
    EXPECT_FALSE(v.probe);
  }
  EXPECT_EQ(gate.state().declined, 0);
  EXPECT_GT(gate.state().expected_ms, 800);  // still estimated, for the metrics
}

}  // namespace
}  // namespace eenn::device
