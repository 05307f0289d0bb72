#include "common/queueing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

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

}  // namespace
}  // namespace eenn::common
