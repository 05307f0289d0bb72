// Loss-ratio predictor for an eenn-device's finite input queue: the device
// admits a request when fewer than --queue_capacity requests wait, and
// --workers requests are processed at once, so with Poisson arrivals it is an
// M/G/c/K queue with c = workers and K = queue_capacity + workers (in
// service plus waiting). A request that finds K in the system is refused
// (RESOURCE_EXHAUSTED); by PASTA the loss ratio is the time-stationary
// probability p_K of a full system. Torch-free.
//
// Methods (the service time enters through its mean and squared coefficient
// of variation SCV = variance / mean^2 only):
//
//  * c = 1: the M/G/1/K embedded Markov chain at departure epochs, solved
//    numerically, with the time-stationary probabilities from the departure
//    ones by p_j = pi_j / (pi_0 + rho), j < K, p_K = 1 - 1 / (pi_0 + rho)
//    (D. Gross, J. F. Shortle, J. M. Thompson, C. M. Harris, Fundamentals of
//    Queueing Theory, 4th ed., Wiley 2008, section 5.1, M/G/1/K).
//    The service time is fitted by a gamma distribution with the same two
//    moments (shape 1/SCV), for which the number of arrivals during one
//    service is negative binomial, in closed form; SCV = 0 is deterministic
//    service (Poisson arrivals per service). Exact for gamma service, so for
//    exponential (SCV 1, M/M/1/K) and Erlang-k (SCV 1/k) service.
//
//  * c > 1: M/G/c/K has no exact solution in terms of two moments. The
//    service time is fitted by a phase-type distribution with the same two
//    moments (H. C. Tijms, A First Course in Stochastic Models, Wiley 2003,
//    the two-moment fits of a positive distribution: a mixture of Erlang(k-1) and Erlang(k)
//    with one rate for SCV < 1, a two-phase hyperexponential with balanced
//    means for SCV >= 1) and the resulting M/PH/c/K continuous-time Markov
//    chain (number in system, busy servers per phase) is solved exactly by
//    Gauss-Seidel iteration. Exact for exponential service (M/M/c/K) and for
//    the fitted distributions; it is also valid for c = 1 (the tests check it
//    against the embedded chain for Erlang service). SCV below 1/kMaxPhases
//    is treated as 1/kMaxPhases to bound the state space.
//
// The choice of method for c > 1 matters because a device with 2 workers
// is not an M/G/1/K queue with halved service time: at low load both servers
// can be idle, and a full system loses one arrival per service completion of
// either server, so the loss curve differs from the single-server one.
#ifndef EENN_COMMON_QUEUEING_H_
#define EENN_COMMON_QUEUEING_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace eenn::common {

struct QueueModel {
  double arrival_rate = 0;     // lambda, arrivals per second (Poisson)
  double service_mean_s = 0;   // E[S], seconds
  double service_scv = 1;      // Var[S] / E[S]^2 (0: deterministic, 1: exponential)
  int servers = 1;             // c: requests processed at once (eenn-device --workers)
  int capacity = 1;            // K >= c: in service plus waiting (--queue_capacity + --workers)
  // Optional: observed service times (seconds). When given they replace the
  // two-moment fit: with c = 1 the embedded chain takes its arrivals-per-
  // service probabilities from this empirical distribution itself (exact for
  // it, tail included: a rare long stall fills a short queue far more often
  // than a gamma with the same mean and SCV predicts); with c > 1 the
  // phase-type fit uses the samples' mean and SCV. service_mean_s and
  // service_scv are then ignored.
  std::vector<double> service_samples_s;
  // Work each arrival adds to the service in progress (seconds), accepted or
  // refused: on a device whose request handling (receiving, parsing, admitting
  // or refusing) shares a core with the worker, every arrival during a service
  // takes that much of the core from it. The service time is then
  // S = S0 + arrival_work_s x (arrivals during S), with S0 the service above
  // (service_mean_s, service_scv or the samples), so it grows with the
  // arrivals it sees: the arrivals during one service are the total progeny
  // of a branching process whose first generation is Poisson(lambda S0) and
  // each arrival has Poisson(lambda arrival_work_s) more (Borel-Tanner), and
  // E[S] = E[S0] / (1 - lambda arrival_work_s). Beyond what a faster or
  // slower S with the same mean shows, the arrivals per service are more
  // dispersed (a burst slows the service that has to absorb it), which a
  // short queue feels as more loss. With lambda arrival_work_s >= 1 the
  // arrivals alone saturate the core: every request is lost. One server only
  // (with several, whether arrival work slows them depends on the cores).
  double arrival_work_s = 0;
};

struct QueueResult {
  double loss_probability = 0;  // p_K: share of arrivals refused
  double mean_in_system = 0;    // L, time average
  double throughput = 0;        // lambda (1 - p_K), accepted per second
  double mean_sojourn_s = 0;    // W = L / throughput (Little), accepted requests
  double mean_wait_s = 0;       // W - E[S]
  double utilization = 0;       // busy share per server: throughput E[S] / c (E[S] with the arrival work)
  std::vector<double> p;        // p[n], n = 0..K: time-stationary number in system
  std::string method;           // which of the methods above gave it
};

// The queue's loss probability and delays by the method for its c (above).
absl::StatusOr<QueueResult> SolveQueue(const QueueModel& m);

// A service speed that drifts slowly: the device's service times come from
// one of several regimes (a shared or thermally throttled CPU runs faster or
// slower for seconds at a time), regime i for a share weight[i] of the time,
// each with its own service mean and SCV. When a regime lasts much longer than
// the queue takes to settle (K service times), the queue is stationary within
// each, and the loss ratio is the time average of the regimes' losses (the
// quasi-static limit of a queue with Markov-modulated service; arrivals are
// Poisson at the same rate throughout, so by PASTA the share of arrivals lost
// is that time average too). Because loss grows convexly with the load below
// saturation, a drifting speed loses more than a steady one of the same mean.
struct ServiceRegime {
  double weight = 1;          // share of the time (normalised over the regimes)
  double service_mean_s = 0;  // E[S] in this regime
  double service_scv = 1;     // Var[S] / E[S]^2 within this regime
};
// Loss, L, throughput and p[n] averaged over the regimes (each solved by
// SolveQueue with m's rate, servers and capacity); W = L / throughput.
// InvalidArgument for no regimes, a weight < 0 or all weights 0.
absl::StatusOr<QueueResult> SolveSlowlyVarying(const QueueModel& m, const std::vector<ServiceRegime>& regimes);

// Regimes from service times (seconds) observed in consecutive windows of time: one
// regime per window with its sample mean, equally weighted, and the SCV
// pooled within windows. Each window mean carries sampling noise of variance
// SCV E[S]^2 / n besides the drift, so the window means are shrunk towards
// their overall mean by sqrt(1 - noise / observed variance) (none left when
// the spread is no more than noise: one steady regime). Windows with fewer
// than 2 samples are skipped.
std::vector<ServiceRegime> RegimesFromWindows(const std::vector<std::vector<double>>& windows);

// M/G/1/K by the embedded Markov chain with gamma-fitted service (c must be 1).
absl::StatusOr<QueueResult> SolveMG1K(const QueueModel& m);

// M/PH/c/K by its continuous-time Markov chain with the two-moment
// phase-type fit of the service time (any c >= 1).
absl::StatusOr<QueueResult> SolveMPHcK(const QueueModel& m);

// Closed form of M/M/c/K (exponential service; SCV is ignored), for reference.
QueueResult SolveMMcK(const QueueModel& m);

// A phase-type distribution whose phases run in sequence: a service starts in
// phase i with probability start[i], phase i lasts an exponential time with
// rate rate[i], then moves on to phase i + 1 with probability cont[i] or ends.
struct PhaseType {
  std::vector<double> start, rate, cont;
  double Mean() const;
  double SecondMoment() const;
};
inline constexpr int kMaxPhases = 50;

// Tijms' two-moment fit (see above); InvalidArgument for mean <= 0 or scv < 0.
absl::StatusOr<PhaseType> FitPhaseType(double mean, double scv);

// Service-time moments from samples: mean, and SCV from the second moment.
struct ServiceMoments {
  double mean = 0, second_moment = 0, scv = 0;
  int64_t n = 0;
};
ServiceMoments ComputeServiceMoments(const std::vector<double>& samples);

}  // namespace eenn::common

#endif  // EENN_COMMON_QUEUEING_H_
