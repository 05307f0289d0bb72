#include "common/queueing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

namespace eenn::common {
namespace {

QueueModel Model(double lambda, double mean_s, double scv, int c, int K) {
  QueueModel m;
  m.arrival_rate = lambda;
  m.service_mean_s = mean_s;
  m.service_scv = scv;
  m.servers = c;
  m.capacity = K;
  return m;
}

// M/M/1/K: p_K = (1 - rho) rho^K / (1 - rho^(K+1)), and 1 / (K + 1) at rho = 1.
double MM1KLoss(double rho, int K) {
  if (std::abs(rho - 1) < 1e-12) return 1.0 / (K + 1);
  return (1 - rho) * std::pow(rho, K) / (1 - std::pow(rho, K + 1));
}

TEST(QueueingTest, MG1KWithExponentialServiceIsMM1K) {
  for (int K : {1, 2, 5, 9, 30}) {
    for (double rho : {0.1, 0.5, 0.9, 1.0, 1.3, 2.0, 5.0}) {
      auto r = SolveMG1K(Model(rho / 0.002, 0.002, 1.0, 1, K));
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_NEAR(r->loss_probability, MM1KLoss(rho, K), 1e-9) << "rho " << rho << " K " << K;
      // Time-average number in system against the closed form.
      double L = 0, norm = 0;
      for (int n = 0; n <= K; ++n) {
        L += n * std::pow(rho, n);
        norm += std::pow(rho, n);
      }
      EXPECT_NEAR(r->mean_in_system, L / norm, 1e-8) << "rho " << rho << " K " << K;
      EXPECT_NEAR(r->mean_sojourn_s, r->mean_in_system / (rho / 0.002 * (1 - r->loss_probability)), 1e-12);
    }
  }
}

TEST(QueueingTest, MD1KSanity) {
  // K = 1 (no waiting room): Erlang loss, insensitive to the service distribution:
  // p_1 = rho / (1 + rho).
  for (double rho : {0.2, 1.0, 3.0}) {
    auto r = SolveMG1K(Model(rho, 1.0, 0.0, 1, 1));
    ASSERT_TRUE(r.ok());
    EXPECT_NEAR(r->loss_probability, rho / (1 + rho), 1e-12);
  }
  // Less variable service loses less than exponential at the same load, and
  // more variable loses more.
  for (double rho : {0.5, 0.9, 1.2}) {
    const double d = SolveMG1K(Model(rho, 1.0, 0.0, 1, 6))->loss_probability;
    const double e2 = SolveMG1K(Model(rho, 1.0, 0.5, 1, 6))->loss_probability;
    const double m = SolveMG1K(Model(rho, 1.0, 1.0, 1, 6))->loss_probability;
    const double h = SolveMG1K(Model(rho, 1.0, 4.0, 1, 6))->loss_probability;
    EXPECT_LT(d, e2) << rho;
    EXPECT_LT(e2, m) << rho;
    EXPECT_LT(m, h) << rho;
  }
  // M/D/1/2 by hand: the departure chain on {0, 1} goes to 0 with probability
  // a_0 = e^-rho from either state, so pi_0 = a_0 and p_2 = 1 - 1 / (a_0 + rho).
  const double rho = 0.8;
  auto r = SolveMG1K(Model(rho, 1.0, 0.0, 1, 2));
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->loss_probability, 1 - 1 / (std::exp(-rho) + rho), 1e-12);
  // Deterministic service at rho < 1 with a large room loses next to nothing.
  EXPECT_LT(SolveMG1K(Model(0.7, 1.0, 0.0, 1, 40))->loss_probability, 1e-12);
}

TEST(QueueingTest, MonotoneInRateAndLimits) {
  for (double scv : {0.0, 0.3, 1.0, 3.0}) {
    for (int c : {1, 2}) {
      double prev = -1;
      for (double rho : {0.05, 0.2, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 4.0}) {
        const double lambda = c * rho / 0.01;
        auto r = SolveQueue(Model(lambda, 0.01, scv, c, c + 8));
        ASSERT_TRUE(r.ok()) << r.status();
        EXPECT_GT(r->loss_probability, prev) << "scv " << scv << " c " << c << " rho " << rho;
        prev = r->loss_probability;
        EXPECT_NEAR(std::accumulate(r->p.begin(), r->p.end(), 0.0), 1.0, 1e-9);
        EXPECT_LE(r->utilization, 1.0 + 1e-9);
      }
      // Light load: nothing lost. Heavy load: the server is always busy, so the
      // accepted rate tends to c / E[S] and the loss to 1 - 1 / rho.
      EXPECT_LT(SolveQueue(Model(c * 0.05 / 0.01, 0.01, scv, c, c + 8))->loss_probability, 1e-8);
      for (double rho : {10.0, 50.0}) {
        auto r = SolveQueue(Model(c * rho / 0.01, 0.01, scv, c, c + 8));
        ASSERT_TRUE(r.ok());
        EXPECT_NEAR(r->loss_probability, 1 - 1 / rho, 0.01 / rho) << "scv " << scv << " c " << c;
      }
    }
  }
  // A larger room loses less.
  EXPECT_LT(SolveQueue(Model(90, 0.01, 1.0, 1, 20))->loss_probability,
            SolveQueue(Model(90, 0.01, 1.0, 1, 5))->loss_probability);
}

TEST(QueueingTest, PhaseTypeFitMatchesTwoMoments) {
  for (double scv : {0.02, 0.1, 1.0 / 3, 0.4, 0.5, 0.7, 0.99, 1.0, 1.5, 4.0, 20.0}) {
    auto ph = FitPhaseType(0.003, scv);
    ASSERT_TRUE(ph.ok());
    EXPECT_NEAR(ph->Mean(), 0.003, 1e-12) << scv;
    const double fitted_scv = ph->SecondMoment() / (ph->Mean() * ph->Mean()) - 1;
    EXPECT_NEAR(fitted_scv, scv, 1e-9) << scv;
  }
  EXPECT_FALSE(FitPhaseType(0, 1).ok());
  EXPECT_FALSE(FitPhaseType(1, -0.5).ok());
}

TEST(QueueingTest, MarkovChainAgreesWithEmbeddedChainAndMMcK) {
  // c = 1, Erlang-k service (SCV 1/k) is both gamma and phase-type: the two
  // methods must agree.
  for (double scv : {1.0, 0.5, 0.25}) {
    for (double rho : {0.4, 0.95, 1.7}) {
      auto a = SolveMG1K(Model(rho / 0.002, 0.002, scv, 1, 9));
      auto b = SolveMPHcK(Model(rho / 0.002, 0.002, scv, 1, 9));
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_NEAR(a->loss_probability, b->loss_probability, 1e-9) << scv << " " << rho;
      EXPECT_NEAR(a->mean_in_system, b->mean_in_system, 1e-8) << scv << " " << rho;
    }
  }
  // Exponential service with c servers: the chain is M/M/c/K.
  for (int c : {2, 3}) {
    for (double rho : {0.3, 0.9, 1.5}) {
      const QueueModel m = Model(c * rho / 0.004, 0.004, 1.0, c, c + 6);
      auto r = SolveMPHcK(m);
      ASSERT_TRUE(r.ok());
      const QueueResult want = SolveMMcK(m);
      EXPECT_NEAR(r->loss_probability, want.loss_probability, 1e-9) << c << " " << rho;
      EXPECT_NEAR(r->mean_in_system, want.mean_in_system, 1e-8) << c << " " << rho;
    }
  }
  // M/M/c/c is Erlang's B: c = 2, a = 1: B = (1/2) / (1 + 1 + 1/2) = 0.2.
  EXPECT_NEAR(SolveMMcK(Model(1, 1, 1, 2, 2)).loss_probability, 0.2, 1e-12);
  // Two workers are not one worker of twice the speed: with fewer than two
  // requests in the system one of them idles, so the pair drains a queue more
  // slowly and loses more at the same K.
  const double two = SolveQueue(Model(150, 0.01, 1.0, 2, 10))->loss_probability;
  const double one = SolveQueue(Model(150, 0.005, 1.0, 1, 10))->loss_probability;
  EXPECT_GT(two, one);
}

TEST(QueueingTest, RefusesBadModels) {
  EXPECT_FALSE(SolveQueue(Model(-1, 0.01, 1, 1, 5)).ok());
  EXPECT_FALSE(SolveQueue(Model(1, 0, 1, 1, 5)).ok());
  EXPECT_FALSE(SolveQueue(Model(1, 0.01, -1, 1, 5)).ok());
  EXPECT_FALSE(SolveQueue(Model(1, 0.01, 1, 3, 2)).ok());
  EXPECT_FALSE(SolveMG1K(Model(1, 0.01, 1, 2, 5)).ok());
}

TEST(QueueingTest, ServiceMomentsFromSamples) {
  const ServiceMoments s = ComputeServiceMoments({1, 2, 3, 4});
  EXPECT_EQ(s.n, 4);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.second_moment, 7.5);
  EXPECT_DOUBLE_EQ(s.scv, 7.5 / 6.25 - 1);
  EXPECT_EQ(ComputeServiceMoments({}).n, 0);
}

TEST(QueueingTest, EmpiricalServiceDistribution) {
  // One repeated value: deterministic service, M/D/1/K.
  QueueModel det = Model(400, 0.002, 0, 1, 9);
  auto md1k = SolveMG1K(det);
  det.service_samples_s.assign(100, 0.002);
  det.service_mean_s = 1;  // ignored with samples
  auto from_samples = SolveQueue(det);
  ASSERT_TRUE(md1k.ok() && from_samples.ok());
  EXPECT_NEAR(from_samples->loss_probability, md1k->loss_probability, 1e-12);
  EXPECT_NEAR(from_samples->mean_sojourn_s, md1k->mean_sojourn_s, 1e-12);
  EXPECT_NE(from_samples->method.find("empirical service, 100 samples"), std::string::npos);
  // Exponential quantiles: close to M/M/1/K.
  QueueModel expo = Model(400, 0.002, 1, 1, 9);
  for (int i = 0; i < 20000; ++i) expo.service_samples_s.push_back(-0.002 * std::log(1 - (i + 0.5) / 20000));
  auto e = SolveMG1K(expo);
  ASSERT_TRUE(e.ok());
  EXPECT_NEAR(e->loss_probability, MM1KLoss(0.8, 9), 0.02 * MM1KLoss(0.8, 9));
  // A heavy tail: 1.6 ms, and one in 200 a 25 ms stall. A gamma with the same
  // mean and SCV spreads that variance evenly and under-predicts how often
  // a stall fills the queue.
  QueueModel stalls = Model(420, 0.002, 1, 1, 9);
  for (int i = 0; i < 200; ++i) stalls.service_samples_s.push_back(i == 0 ? 0.025 : 0.0016);
  auto tail = SolveMG1K(stalls);
  const ServiceMoments mo = ComputeServiceMoments(stalls.service_samples_s);
  auto gamma = SolveMG1K(Model(420, mo.mean, mo.scv, 1, 9));
  ASSERT_TRUE(tail.ok() && gamma.ok());
  EXPECT_GT(tail->loss_probability, 1.5 * gamma->loss_probability);
  EXPECT_NEAR(tail->utilization, 420 * (1 - tail->loss_probability) * mo.mean, 1e-9);
  // Several workers: the phase-type fit of the samples' moments.
  QueueModel two = Model(900, 1, 1, 2, 6);
  two.service_samples_s = {0.001, 0.002, 0.003};
  auto t = SolveQueue(two);
  auto t_moments = SolveQueue(Model(900, 0.002, ComputeServiceMoments(two.service_samples_s).scv, 2, 6));
  ASSERT_TRUE(t.ok() && t_moments.ok());
  EXPECT_NEAR(t->loss_probability, t_moments->loss_probability, 1e-12);
  // Bad samples are refused.
  QueueModel bad = Model(400, 0.002, 0, 1, 9);
  bad.service_samples_s = {0.001, -0.001};
  EXPECT_FALSE(SolveQueue(bad).ok());
  bad.service_samples_s = {0.001, NAN};
  EXPECT_FALSE(SolveMG1K(bad).ok());
}

TEST(QueueingTest, SlowlyVaryingSpeedAveragesTheRegimesLosses) {
  const QueueModel m = Model(420, 0.0017, 0.33, 1, 9);
  // One regime: the steady queue.
  auto one = SolveSlowlyVarying(m, {{1, 0.0017, 0.33}});
  auto steady = SolveQueue(m);
  ASSERT_TRUE(one.ok() && steady.ok());
  EXPECT_NEAR(one->loss_probability, steady->loss_probability, 1e-12);
  EXPECT_NEAR(one->mean_in_system, steady->mean_in_system, 1e-12);
  // Two regimes, 10% faster and slower, weights 3:1: the weighted mean of their losses.
  auto fast = SolveQueue(Model(420, 0.00153, 0.33, 1, 9));
  auto slow = SolveQueue(Model(420, 0.00187, 0.33, 1, 9));
  auto both = SolveSlowlyVarying(m, {{3, 0.00153, 0.33}, {1, 0.00187, 0.33}});
  ASSERT_TRUE(fast.ok() && slow.ok() && both.ok());
  EXPECT_NEAR(both->loss_probability, 0.75 * fast->loss_probability + 0.25 * slow->loss_probability, 1e-12);
  EXPECT_NEAR(both->throughput, 420 * (1 - both->loss_probability), 1e-9);
  double total = 0;
  for (double p : both->p) total += p;
  EXPECT_NEAR(total, 1, 1e-9);
  EXPECT_NE(both->method.find("2 service-speed regimes"), std::string::npos);
  // Below saturation the loss is convex in the speed: a speed that drifts
  // +-10% around the same mean loses more than a steady one.
  auto drift = SolveSlowlyVarying(m, {{1, 0.00153, 0.33}, {1, 0.00187, 0.33}});
  ASSERT_TRUE(drift.ok());
  EXPECT_GT(drift->loss_probability, 1.3 * steady->loss_probability);
  // Several workers go through the multi-server chain.
  auto two = SolveSlowlyVarying(Model(900, 0.0017, 0.5, 2, 6), {{1, 0.0017, 0.5}});
  auto two_steady = SolveQueue(Model(900, 0.0017, 0.5, 2, 6));
  ASSERT_TRUE(two.ok() && two_steady.ok());
  EXPECT_NEAR(two->loss_probability, two_steady->loss_probability, 1e-12);
  // Refused: no regimes, a negative weight, all weights 0, a bad regime.
  EXPECT_FALSE(SolveSlowlyVarying(m, {}).ok());
  EXPECT_FALSE(SolveSlowlyVarying(m, {{-1, 0.0017, 0.33}}).ok());
  EXPECT_FALSE(SolveSlowlyVarying(m, {{0, 0.0017, 0.33}}).ok());
  EXPECT_FALSE(SolveSlowlyVarying(m, {{1, 0, 0.33}}).ok());
}

TEST(QueueingTest, RegimesFromWindowsKeepDriftAndDropSamplingNoise) {
  // Deterministic pseudo-random gamma-like samples: two windows at 1.5 ms and
  // two at 1.9 ms, 400 samples each with an SCV of about 0.3.
  uint64_t state = 12345;
  auto uniform = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(state >> 11) / 9007199254740992.0;
  };
  auto window = [&](double mean, int n) {
    std::vector<double> w;
    for (int i = 0; i < n; ++i) {
      // Sum of 3 exponentials / 3: Erlang-3, SCV 1/3.
      double x = 0;
      for (int k = 0; k < 3; ++k) x -= std::log(1 - uniform());
      w.push_back(mean * x / 3);
    }
    return w;
  };
  auto drifting = RegimesFromWindows({window(0.0015, 400), window(0.0019, 400), window(0.0015, 400),
                                      window(0.0019, 400), {0.002}});
  ASSERT_EQ(drifting.size(), 4u);  // the 1-sample window is skipped
  EXPECT_NEAR(drifting[0].service_mean_s, 0.0015, 0.0001);
  EXPECT_NEAR(drifting[1].service_mean_s, 0.0019, 0.0001);
  EXPECT_NEAR(drifting[0].service_scv, 1.0 / 3, 0.06);
  // A steady speed: the window means differ by sampling noise only, and are
  // pulled (almost) together.
  std::vector<std::vector<double>> steady_windows;
  for (int i = 0; i < 8; ++i) steady_windows.push_back(window(0.0017, 400));
  double raw_lo = 1, raw_hi = 0;
  for (const auto& w : steady_windows) {
    const double mean = ComputeServiceMoments(w).mean;
    raw_lo = std::min(raw_lo, mean);
    raw_hi = std::max(raw_hi, mean);
  }
  auto steady = RegimesFromWindows(steady_windows);
  ASSERT_EQ(steady.size(), 8u);
  double lo = 1, hi = 0;
  for (const auto& g : steady) {
    lo = std::min(lo, g.service_mean_s);
    hi = std::max(hi, g.service_mean_s);
  }
  EXPECT_NEAR(0.5 * (lo + hi), 0.0017, 0.0001);
  EXPECT_GT(raw_hi - raw_lo, 0.00005);  // the noise is there ...
  EXPECT_LT(hi - lo, 0.5 * (raw_hi - raw_lo));  // ... and mostly removed
  EXPECT_TRUE(RegimesFromWindows({}).empty());
}

// A single-server queue of capacity K under Poisson arrivals whose service is
// S0 (gamma) plus `work` for each arrival (accepted or refused) during it,
// simulated event by event: the loss share and the server's busy share.
struct Simulated {
  double loss = 0, busy = 0;
};
Simulated SimulateArrivalWork(double lambda, double mean_s, double scv, double work, int K, int64_t arrivals,
                              uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(lambda);
  std::gamma_distribution<double> service(1 / scv, mean_s * scv);
  int n = 0;
  double left = 0, busy = 0, now = 0;
  int64_t lost = 0;
  for (int64_t i = 0; i < arrivals; ++i) {
    double dt = gap(rng);
    now += dt;
    while (dt > 0 && n > 0) {
      if (left <= dt) {
        dt -= left;
        busy += left;
        --n;
        left = n > 0 ? service(rng) : 0;
      } else {
        left -= dt;
        busy += dt;
        dt = 0;
      }
    }
    if (n > 0) left += work;  // its handling takes the core from the service in progress
    if (n >= K) {
      ++lost;
      continue;
    }
    if (++n == 1) left = service(rng);
  }
  return {static_cast<double>(lost) / static_cast<double>(arrivals), busy / now};
}

TEST(QueueingTest, ArrivalWorkMatchesSimulationAndLosesMoreThanTheSameMeanWithout) {
  // 400/s, S0 2 ms (SCV 0.5), each arrival 0.25 ms of work: E[S] = 2 / (1 - 0.1) ms, load 0.89.
  QueueModel m = Model(400, 0.002, 0.5, 1, 6);
  m.arrival_work_s = 0.00025;
  auto r = SolveQueue(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->method.find("each arrival adds 0.25 ms of work"), std::string::npos) << r->method;
  const Simulated sim = SimulateArrivalWork(400, 0.002, 0.5, 0.00025, 6, 4000000, 7);
  EXPECT_NEAR(r->loss_probability / sim.loss, 1.0, 0.03) << r->loss_probability << " vs simulated " << sim.loss;
  EXPECT_NEAR(r->utilization, sim.busy, 0.005);
  // Busy share = throughput E[S] with E[S] = E[S0] / (1 - lambda work), and 1 - p0.
  EXPECT_NEAR(r->utilization, r->throughput * 0.002 / 0.9, 1e-12);
  EXPECT_NEAR(r->utilization, 1 - r->p[0], 1e-9);
  // The same mean service without arrival work: less loss, because there a
  // burst of arrivals does not slow the service that has to absorb it.
  QueueModel same_mean = Model(400, 0.002 / 0.9, 0.5, 1, 6);
  auto plain = SolveQueue(same_mean);
  ASSERT_TRUE(plain.ok());
  EXPECT_GT(r->loss_probability, plain->loss_probability * 1.05);
  const Simulated sim_plain = SimulateArrivalWork(400, 0.002 / 0.9, 0.5, 0, 6, 4000000, 8);
  EXPECT_NEAR(plain->loss_probability / sim_plain.loss, 1.0, 0.03);
  // Empirical S0 samples take the same branching.
  QueueModel det = Model(300, 0.002, 0, 1, 5);
  det.arrival_work_s = 0.0003;
  auto from_model = SolveQueue(det);
  det.service_samples_s.assign(50, 0.002);
  auto from_samples = SolveQueue(det);
  ASSERT_TRUE(from_model.ok() && from_samples.ok());
  EXPECT_NEAR(from_model->loss_probability, from_samples->loss_probability, 1e-12);
}

TEST(QueueingTest, ArrivalWorkZeroChangesNothingAndBadValuesAreRefused) {
  QueueModel m = Model(350, 0.0025, 0.4, 1, 9);
  auto base = SolveQueue(m);
  // The branching path converges to the plain one as the work vanishes.
  m.arrival_work_s = 1e-9;
  auto tiny = SolveQueue(m);
  ASSERT_TRUE(base.ok() && tiny.ok());
  EXPECT_NEAR(tiny->loss_probability, base->loss_probability, 1e-4 * base->loss_probability);
  EXPECT_NE(tiny->method, base->method);
  EXPECT_EQ(base->method, "M/G/1/K embedded chain (gamma service)");
  m.arrival_work_s = -0.001;
  EXPECT_FALSE(SolveQueue(m).ok());
  m.arrival_work_s = std::nan("");
  EXPECT_FALSE(SolveQueue(m).ok());
  QueueModel two = Model(350, 0.0025, 0.4, 2, 9);
  two.arrival_work_s = 0.0001;
  EXPECT_FALSE(SolveQueue(two).ok());
  // Arrivals whose own handling needs the whole core: all lost.
  m.arrival_work_s = 1.0 / 350;
  auto saturated = SolveQueue(m);
  ASSERT_TRUE(saturated.ok());
  EXPECT_EQ(saturated->loss_probability, 1.0);
  EXPECT_NE(saturated->method.find("saturated"), std::string::npos);
  // More work per arrival, more loss.
  double last = base->loss_probability;
  for (double work : {0.00005, 0.0001, 0.0002, 0.0004}) {
    m.arrival_work_s = work;
    auto r = SolveQueue(m);
    ASSERT_TRUE(r.ok());
    EXPECT_GT(r->loss_probability, last);
    last = r->loss_probability;
  }
  // Averaged over regimes: the served mean includes the work.
  m.arrival_work_s = 0.0002;
  auto steady = SolveQueue(m);
  auto one_regime = SolveSlowlyVarying(m, {ServiceRegime{1, 0.0025, 0.4}});
  ASSERT_TRUE(steady.ok() && one_regime.ok());
  EXPECT_NEAR(one_regime->loss_probability, steady->loss_probability, 1e-12);
  EXPECT_NEAR(one_regime->utilization, steady->utilization, 1e-12);
  EXPECT_NEAR(one_regime->mean_wait_s, steady->mean_wait_s, 1e-12);
}

}  // namespace
}  // namespace eenn::common
