// Load controller: a hand-made set of three configurations whose service
// capacity is known (2 workers; mean service 10, 5 and 2.5 ms, so 200, 400
// and 800 requests/s), driven by synthetic arrival sequences.
#include "common/load_controller.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>

namespace eenn::common {
namespace {

// Exits at layers 1 and 3 (final), everything on the device (split 4); half
// of the requests leave at each exit, the second costing three times the first.
ConfigSet ThreeConfigs() {
  ConfigSet set;
  set.model_name = "toy";
  set.model_version = "1";
  set.exit_layers = {1, 3};
  set.bundle_thresholds = {0.9f, 0.0f};
  const double accuracy[3] = {0.90, 0.86, 0.80};
  const double mean_ms[3] = {10, 5, 2.5};
  for (int i = 0; i < 3; ++i) {
    ExitConfig c;
    c.split = 4;
    c.thresholds = {0.9f - 0.1f * i, 0.0f};
    c.accuracy = accuracy[i];
    c.exit_share = {0.5, 0.5};
    c.exit_device_ms = {0.5 * mean_ms[i], 1.5 * mean_ms[i]};
    c.device_ms = mean_ms[i];
    c.device_ms_m2 = 0.5 * (0.25 + 2.25) * mean_ms[i] * mean_ms[i];
    set.configs.push_back(c);
  }
  return set;
}

LoadControllerOptions Options() {
  LoadControllerOptions o;
  o.loss_target = 0.01;
  o.workers = 2;
  o.queue_capacity = 64;
  o.high_water = 0.5;  // 32 waiting
  o.rate_half_life_s = 2.0;
  o.dwell_s = 3.0;
  return o;
}

constexpr double kTick = 0.25;

// Runs `seconds` of ticks at `rate` arrivals per second with `queue` waiting;
// returns the configuration after each tick.
std::vector<int> Drive(LoadController& c, double& now, double seconds, double rate, int queue = 0) {
  std::vector<int> configs;
  for (double t = 0; t < seconds - 1e-9; t += kTick) {
    now += kTick;
    c.AddArrivals(static_cast<int64_t>(rate * kTick + 0.5));
    configs.push_back(c.Tick(queue, now).config);
  }
  return configs;
}

TEST(LoadControllerTest, BurstWindowOfOneTickMovesStraightToTheConfigurationThatKeepsUp) {
  LoadControllerOptions o = Options();
  o.burst_window_s = kTick;
  auto c = LoadController::Create(ThreeConfigs(), o);
  ASSERT_TRUE(c.ok());
  double now = 0;
  c->Tick(0, now);
  Drive(*c, now, 5, 100);
  auto burst = Drive(*c, now, 1, 600);
  EXPECT_EQ(burst[0], 2);
  EXPECT_EQ(c->state().changes, 1);
  EXPECT_NEAR(c->state().last_rate, 600, 1e-9);
}

TEST(LoadControllerTest, PredictsLossFromServiceCapacity) {
  auto c = LoadController::Create(ThreeConfigs(), Options());
  ASSERT_TRUE(c.ok()) << c.status();
  auto p = c->Predict(300);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_NEAR(p[0].service_mean_ms, 10, 1e-9);
  EXPECT_NEAR(p[0].service_scv, 0.25, 1e-9);
  // Config 0 serves 200/s: at 300/s it loses about a third; the others little.
  EXPECT_NEAR(p[0].loss, 1 - 200.0 / 300, 0.02);
  EXPECT_LT(p[1].loss, 0.01);
  EXPECT_LT(p[2].loss, 1e-6);
}

TEST(LoadControllerTest, BurstMovesToACheaperConfigurationWithinOneTick) {
  auto c = LoadController::Create(ThreeConfigs(), Options());
  ASSERT_TRUE(c.ok());
  double now = 0;
  c->Tick(0, now);
  for (int config : Drive(*c, now, 10, 100)) EXPECT_EQ(config, 0);
  // 600/s: only config 2 (800/s) keeps up. The first tick sees 350/s over
  // the half-second burst window (its lower bound, 323/s: config 1
  // suffices), the second the burst.
  auto burst = Drive(*c, now, 2, 600);
  EXPECT_EQ(burst[0], 1);
  EXPECT_EQ(burst[1], 2);
  EXPECT_EQ(c->state().changes, 2);
  EXPECT_GT(c->state().predictions[0].loss, 0.5);
  EXPECT_LE(c->state().predicted_loss, 0.01);
  EXPECT_DOUBLE_EQ(c->state().expected_accuracy, 0.80);
}

TEST(LoadControllerTest, CalmReturnsToTheMostAccurateAfterTheDwell) {
  auto c = LoadController::Create(ThreeConfigs(), Options());
  ASSERT_TRUE(c.ok());
  double now = 0;
  c->Tick(0, now);
  Drive(*c, now, 5, 100);
  Drive(*c, now, 5, 600);
  ASSERT_EQ(c->state().config, 2);
  const int changes_before = c->state().changes;
  auto calm = Drive(*c, now, 30, 100);
  // Not before the dwell has passed, back to config 0 in the end, each move upwards.
  const int dwell_ticks = static_cast<int>(Options().dwell_s / kTick);
  for (int i = 0; i < dwell_ticks; ++i) EXPECT_EQ(calm[i], 2) << "tick " << i;
  EXPECT_EQ(calm.back(), 0);
  for (size_t i = 1; i < calm.size(); ++i) EXPECT_LE(calm[i], calm[i - 1]);
  EXPECT_LE(c->state().changes - changes_before, 2);
  // Two moves at least a dwell apart.
  int first = -1, second = -1;
  for (size_t i = 1; i < calm.size(); ++i) {
    if (calm[i] != calm[i - 1]) (first < 0 ? first : second) = static_cast<int>(i);
  }
  if (second >= 0) {
    EXPECT_GE(second - first, dwell_ticks);
  }
}

TEST(LoadControllerTest, DoesNotFlapAtABoundaryRate) {
  auto probe = LoadController::Create(ThreeConfigs(), Options());
  ASSERT_TRUE(probe.ok());
  // The rate at which config 0's predicted loss crosses the target.
  double lo = 50, hi = 400;
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    (probe->Predict(mid)[0].loss > 0.01 ? hi : lo) = mid;
  }
  const double boundary = lo;
  EXPECT_GT(boundary, 150);
  EXPECT_LT(boundary, 230);
  auto c = LoadController::Create(ThreeConfigs(), Options());
  double now = 0;
  c->Tick(0, now);
  // 60 s alternating 3% above and below the boundary, tick by tick.
  std::vector<int> configs;
  for (int i = 0; i < 240; ++i) {
    now += kTick;
    c->AddArrivals(static_cast<int64_t>(boundary * (i % 2 ? 1.03 : 0.97) * kTick + 0.5));
    configs.push_back(c->Tick(0, now).config);
  }
  EXPECT_LE(c->state().changes, 1);
  EXPECT_NE(configs.back(), 2);  // 1 (400/s) is enough
}

TEST(LoadControllerTest, QueueAboveHighWaterDrainsTheBacklog) {
  LoadControllerOptions o = Options();
  o.drain_s = 0.5;
  o.pressure_margin = 0;  // the backlog term alone
  o.rate_z = 0;           // on the windows' point estimates
  auto c = LoadController::Create(ThreeConfigs(), o);
  ASSERT_TRUE(c.ok());
  double now = 0;
  c->Tick(0, now);
  // 180/s alone suits config 0 ...
  for (int config : Drive(*c, now, 5, 180, 5)) EXPECT_EQ(config, 0);
  // ... but with 60 waiting (high water 32) the backlog must drain: cheaper at once.
  auto full = Drive(*c, now, kTick, 180, 60);
  EXPECT_GT(full.front(), 0);
  EXPECT_NEAR(c->state().rate_used, 180 + (60 - 32) / 0.5, 1e-6);
}

TEST(LoadControllerTest, QueueAtHighWaterCountsTheBusyStretch) {
  for (const bool at_high_water : {true, false}) {
    auto c = LoadController::Create(ThreeConfigs(), Options());
    ASSERT_TRUE(c.ok());
    double now = 0;
    c->Tick(0, now);
    for (int config : Drive(*c, now, 10, 100)) EXPECT_EQ(config, 0);
    // A tick 105 ms into a burst at 600/s (a decision the queue brought
    // forward): the windows still mostly calm; the 64 arrivals since one
    // last found the queue empty came at 600/s (63 gaps over 105 ms).
    now += 0.105;
    c->AddArrivals(64);
    c->SetBusyStretch(63, 0.105);
    auto s = c->Tick(at_high_water ? 32 : 31, now);
    // The short window (at least 500 ms of ticks): 114 arrivals over 605 ms.
    const double window_lower = (114 - std::sqrt(114.0)) / 0.605;
    if (at_high_water) {
      // The stretch's lower bound, (63 - 0.5 sqrt(63)) / 0.105 s = 562/s: only config 2 (800/s) keeps up.
      EXPECT_NEAR(s.rate_used, (63 - 0.5 * std::sqrt(63.0)) / 0.105, 1e-6);
      EXPECT_EQ(s.config, 2);
    } else {
      // Below the mark it does not count: by the windows' 171/s config 0 (200/s) will do.
      EXPECT_NEAR(s.rate_used, window_lower, 1e-6);
      EXPECT_EQ(s.config, 0);
    }
  }
}

TEST(LoadControllerTest, QueueAtHighWaterForTheSettleTimeOverridesTheServiceModel) {
  auto c = LoadController::Create(ThreeConfigs(), Options());
  ASSERT_TRUE(c.ok());
  double now = 0;
  c->Tick(0, now);
  for (int config : Drive(*c, now, 10, 100)) EXPECT_EQ(config, 0);
  // 100/s, by the model well within config 0's 200/s, yet the queue stays at
  // high water (32 of 64): the model overestimates config 0. Not judged on
  // one tick, nor while the queue dips below the mark ...
  EXPECT_EQ(Drive(*c, now, kTick, 100, 32).back(), 0);
  EXPECT_EQ(Drive(*c, now, kTick, 100, 10).back(), 0);
  EXPECT_EQ(Drive(*c, now, kTick, 100, 32).back(), 0);
  // ... but after 0.5 s at the mark at every tick: at least its capacity
  // (200/s) x 1.1, and config 1 (400/s).
  auto s = Drive(*c, now, 2 * kTick, 100, 32);
  EXPECT_EQ(s.back(), 1);
  EXPECT_NEAR(c->state().rate_used, 220, 1e-6);
  // Config 1 is judged the same way: not at once (no ratchet down on the
  // queue that config 0 left) ...
  EXPECT_EQ(Drive(*c, now, kTick, 100, 32).back(), 1);
  // ... but once it has been in use, and the queue at the mark, for 0.5 s.
  EXPECT_EQ(Drive(*c, now, kTick, 100, 32).back(), 2);
  EXPECT_NEAR(c->state().rate_used, 440, 1e-6);
  // Without the floor nothing moves.
  LoadControllerOptions o = Options();
  o.pressure_margin = 0;
  auto off = LoadController::Create(ThreeConfigs(), o);
  double t = 0;
  off->Tick(0, t);
  Drive(*off, t, 10, 100);
  EXPECT_EQ(Drive(*off, t, 3, 100, 32).back(), 0);
}

TEST(LoadControllerTest, NoisyArrivalsDoNotRatchetTheConfigurationDown) {
  // Poisson arrivals at 300/s for a minute: config 1 (400/s) keeps up, but
  // by its point estimate the busiest tick would ask for config 2.
  LoadControllerOptions o = Options();
  o.burst_window_s = kTick;
  auto c = LoadController::Create(ThreeConfigs(), o);
  ASSERT_TRUE(c.ok());
  std::mt19937 rng(7);
  std::poisson_distribution<int> per_tick(300 * kTick);
  double now = 0;
  c->Tick(0, now);
  int largest = 0;
  for (int i = 0; i < 240; ++i) {
    now += kTick;
    const int n = per_tick(rng);
    largest = std::max(largest, n);
    c->AddArrivals(n);
    c->Tick(0, now);
  }
  ASSERT_GT(c->Predict(largest / kTick)[1].loss, 0.01) << "the noise must reach past config 1 for the test to mean "
                                                           "anything (busiest tick: "
                                                        << largest << " arrivals)";
  EXPECT_EQ(c->state().config, 1);
  EXPECT_LE(c->state().changes, 2);
}

TEST(LoadControllerTest, MeasuredSlowdownScalesTheServiceTimes) {
  auto c = LoadController::Create(ThreeConfigs(), Options());
  ASSERT_TRUE(c.ok());
  double now = 0;
  c->Tick(0, now);
  for (int config : Drive(*c, now, 5, 150)) EXPECT_EQ(config, 0);
  // The device computes twice as slowly as profiled: config 0 now serves 100/s.
  for (int i = 0; i < 200; ++i) {
    ServiceObservation o;
    o.config = 0;
    o.exit = i % 2;
    o.device_ms = 2 * (i % 2 ? 15.0 : 5.0);
    c->AddService(o, now + i * 0.001);
  }
  EXPECT_NEAR(c->state().speed_factor, 2.0, 0.05);
  auto slow = Drive(*c, now, kTick, 150);
  EXPECT_EQ(slow.front(), 1);  // 5 ms x 2 = 10 ms: 200/s
  EXPECT_NEAR(c->state().predictions[0].service_mean_ms, 20, 0.5);
}

TEST(LoadControllerTest, OffloadedRequestsPayTheRemotePart) {
  ConfigSet set = ThreeConfigs();
  set.configs[0].split = 2;  // exit 0 (layer 1) on the device, the final exit offloaded
  auto c = LoadController::Create(set, Options());
  ASSERT_TRUE(c.ok());
  ServiceObservation o;
  o.config = 0;
  o.exit = 1;
  o.device_ms = 15;
  o.remote_ms = 4;
  o.fixed_ms = 1;
  o.offloaded = true;
  c->AddService(o, 0);
  auto p = c->Predict(100);
  // Half leave at exit 0 (5 + 1 ms), half are offloaded (15 + 1 + 4 ms).
  EXPECT_NEAR(p[0].service_mean_ms, 0.5 * 6 + 0.5 * 20, 1e-9);
  EXPECT_NEAR(p[1].service_mean_ms, 5 + 1, 1e-9);  // no offload in config 1
}

// One worker whose services hold the time other threads took from it: the
// device computes 10x faster than profiled (config 1: 0.5 ms of compute,
// config 0: 1 ms), the fixed part is 0.6 ms; of the stolen time, 0.05 ms
// comes whatever the arrivals and 0.2 ms with each arrival (0 or 1 per
// service, 0.5 on average): W = 0.2 ms, at 0.5 arrivals per 1.1 ms
// (455 requests/s), so a share 0.091 of the busy time.
TEST(LoadControllerTest, ArrivalWorkEntersTheModelWithOneWorker) {
  LoadControllerOptions o = Options();
  o.workers = 1;
  o.queue_capacity = 8;
  o.arrival_work = true;
  auto feed = [](LoadController& c, bool measured) {
    for (int i = 0; i < 400; ++i) {
      ServiceObservation s;
      s.config = 1;
      s.exit = i % 2;
      s.device_ms = i % 2 ? 0.75 : 0.25;
      s.fixed_ms = 0.6;
      const int arrivals = (i / 2) % 2;  // independent of the exit
      s.stolen_ms = measured ? 0.05 + 0.2 * arrivals : -1;
      s.arrivals = measured ? arrivals : 0;
      c.AddService(s, i * 0.001);
    }
  };
  auto with = LoadController::Create(ThreeConfigs(), o);
  auto without = LoadController::Create(ThreeConfigs(), o);
  ASSERT_TRUE(with.ok() && without.ok());
  feed(*with, true);
  feed(*without, false);
  EXPECT_NEAR(with->state().arrival_work_ms, 0.2, 0.005);  // the slope, not 0.3 (stolen / arrivals)
  EXPECT_NEAR(with->state().work_share, 0.2 * 0.5 / 1.1, 0.005);
  EXPECT_EQ(without->state().arrival_work_ms, 0);
  // At the rate it was measured at, both see E[S] = 1.1 ms; with the work
  // the arrivals per service are more dispersed (a burst slows the service
  // that absorbs it), so the loss is higher.
  const double measured_rate = 0.5 / 1.1e-3;
  const double w = with->state().arrival_work_ms, q = with->state().work_share;
  const auto at = with->Predict(measured_rate)[1];
  EXPECT_NEAR(at.base_service_mean_ms, 1.1 * (1 - q), 1e-9);
  EXPECT_NEAR(at.service_mean_ms, 1.1 * (1 - q) / (1 - measured_rate * w / 1000), 1e-9);
  EXPECT_NEAR(at.service_mean_ms, 1.1, 0.01);
  EXPECT_NEAR(without->Predict(measured_rate)[1].service_mean_ms, 1.1, 1e-9);
  EXPECT_GT(at.loss, 1.05 * without->Predict(measured_rate)[1].loss);
  // The work's share comes off every configuration in proportion: config 0
  // (0.6 + 1.0 ms measured) keeps (1 - q) of it.
  EXPECT_NEAR(with->Predict(measured_rate)[0].base_service_mean_ms, 1.6 * (1 - q), 1e-9);
  // At higher rates the work also stretches the mean service.
  for (double rate : {600.0, 750.0, 900.0}) {
    const auto p = with->Predict(rate)[1];
    EXPECT_NEAR(p.service_mean_ms, 1.1 * (1 - q) / (1 - rate * w / 1000), 1e-9);
    EXPECT_GT(p.loss, without->Predict(rate)[1].loss) << rate;
  }
  // Arrivals whose handling alone takes the core: everything is lost.
  EXPECT_EQ(with->Predict(1000 / w + 1)[1].loss, 1.0);
  EXPECT_TRUE(std::isinf(with->Predict(1000 / w + 1)[1].service_mean_ms));
  // Off by default, and with several workers (their pooled model has none);
  // offloaded services (the worker waited for the round trip) do not count.
  LoadControllerOptions off = o;
  off.arrival_work = false;
  auto plain = LoadController::Create(ThreeConfigs(), off);
  auto pooled = LoadController::Create(ThreeConfigs(), [] {
    LoadControllerOptions p = Options();
    p.arrival_work = true;
    return p;
  }());
  auto offloaded = LoadController::Create(ThreeConfigs(), o);
  ASSERT_TRUE(plain.ok() && pooled.ok() && offloaded.ok());
  feed(*plain, true);
  feed(*pooled, true);
  for (int i = 0; i < 400; ++i) {
    ServiceObservation s;
    s.config = 1;
    s.exit = 1;
    s.device_ms = 0.75;
    s.remote_ms = 5;
    s.offloaded = true;
    s.stolen_ms = 5 * (i % 2);
    s.arrivals = i % 2;
    offloaded->AddService(s, i * 0.001);
  }
  for (auto* c : {&*plain, &*pooled, &*offloaded}) {
    EXPECT_EQ(c->state().arrival_work_ms, 0);
    EXPECT_EQ(c->state().work_share, 0);
  }
  EXPECT_NEAR(plain->Predict(measured_rate)[1].service_mean_ms, 1.1, 1e-9);
}

TEST(LoadControllerTest, RefusesBadOptions) {
  LoadControllerOptions o = Options();
  EXPECT_FALSE(LoadController::Create(ConfigSet{}, o).ok());
  o.loss_target = 0;
  EXPECT_FALSE(LoadController::Create(ThreeConfigs(), o).ok());
  o = Options();
  o.workers = 0;
  EXPECT_FALSE(LoadController::Create(ThreeConfigs(), o).ok());
  o = Options();
  o.initial_config = 3;
  EXPECT_FALSE(LoadController::Create(ThreeConfigs(), o).ok());
  for (double LoadControllerOptions::*field :
       {&LoadControllerOptions::rate_window_s, &LoadControllerOptions::rate_z, &LoadControllerOptions::busy_z,
        &LoadControllerOptions::pressure_settle_s, &LoadControllerOptions::dwell_s}) {
    for (const double bad : {-1.0, std::nan("")}) {
      o = Options();
      o.*field = bad;
      EXPECT_FALSE(LoadController::Create(ThreeConfigs(), o).ok()) << bad;
    }
  }
  o = Options();
  o.high_water = 1.5;
  EXPECT_FALSE(LoadController::Create(ThreeConfigs(), o).ok());
}

TEST(LoadControllerTest, TickIsCheapEnoughForTheDevice) {
  auto c = LoadController::Create(ThreeConfigs(), Options());
  ASSERT_TRUE(c.ok());
  double now = 0;
  c->Tick(0, now);
  const auto t0 = std::chrono::steady_clock::now();
  Drive(*c, now, 5, 380);  // near config 1's capacity: the slowest solves
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms / 20, 5.0) << "ms per tick";
  std::printf("%.2f ms per tick\n", ms / 20);
}

}  // namespace
}  // namespace eenn::common
