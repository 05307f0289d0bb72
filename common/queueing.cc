#include "common/queueing.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace eenn::common {
namespace {

// m with service_mean_s and service_scv taken from its samples (if any).
absl::StatusOr<QueueModel> WithSampleMoments(const QueueModel& m) {
  if (m.service_samples_s.empty()) return m;
  for (double s : m.service_samples_s) {
    if (!(s >= 0) || !std::isfinite(s)) {
      return absl::InvalidArgumentError(absl::StrCat("service-time sample ", s, " must be finite and >= 0"));
    }
  }
  const ServiceMoments mo = ComputeServiceMoments(m.service_samples_s);
  QueueModel out = m;
  out.service_mean_s = mo.mean;
  out.service_scv = mo.scv;
  return out;
}

absl::Status Validate(const QueueModel& m) {
  if (!(m.arrival_rate >= 0) || !std::isfinite(m.arrival_rate)) {
    return absl::InvalidArgumentError(absl::StrCat("arrival rate ", m.arrival_rate, " must be >= 0"));
  }
  if (!(m.service_mean_s > 0) || !std::isfinite(m.service_mean_s)) {
    return absl::InvalidArgumentError(absl::StrCat("mean service time ", m.service_mean_s, " must be > 0"));
  }
  if (!(m.service_scv >= 0) || !std::isfinite(m.service_scv)) {
    return absl::InvalidArgumentError(absl::StrCat("service-time SCV ", m.service_scv, " must be >= 0"));
  }
  if (!(m.arrival_work_s >= 0) || !std::isfinite(m.arrival_work_s)) {
    return absl::InvalidArgumentError(absl::StrCat("arrival work ", m.arrival_work_s, " s must be >= 0"));
  }
  if (m.arrival_work_s > 0 && m.servers != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("arrival work (", m.arrival_work_s, " s) is modelled for one server only, not ", m.servers));
  }
  if (m.servers < 1 || m.capacity < m.servers) {
    return absl::InvalidArgumentError(
        absl::StrCat("need 1 <= servers (", m.servers, ") <= capacity (", m.capacity, ")"));
  }
  return absl::OkStatus();
}

// Fills the derived figures from p (sums to 1).
QueueResult Finish(const QueueModel& m, std::vector<double> p, std::string method) {
  QueueResult r;
  double total = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& x : p) x = std::max(0.0, x / total);
  r.p = std::move(p);
  r.loss_probability = r.p.back();
  for (size_t n = 0; n < r.p.size(); ++n) r.mean_in_system += static_cast<double>(n) * r.p[n];
  r.throughput = m.arrival_rate * (1 - r.loss_probability);
  r.mean_sojourn_s = r.throughput > 0 ? r.mean_in_system / r.throughput : m.service_mean_s;
  r.mean_wait_s = std::max(0.0, r.mean_sojourn_s - m.service_mean_s);
  r.utilization = r.throughput * m.service_mean_s / m.servers;
  r.method = std::move(method);
  return r;
}

// Solves A x = b in place (dense, Gaussian elimination with partial pivoting).
absl::Status SolveDense(std::vector<std::vector<double>>& a, std::vector<double>& b) {
  const size_t n = b.size();
  for (size_t col = 0; col < n; ++col) {
    size_t piv = col;
    for (size_t r = col + 1; r < n; ++r) {
      if (std::abs(a[r][col]) > std::abs(a[piv][col])) piv = r;
    }
    if (std::abs(a[piv][col]) < 1e-300) return absl::InternalError("singular embedded-chain system");
    std::swap(a[piv], a[col]);
    std::swap(b[piv], b[col]);
    for (size_t r = col + 1; r < n; ++r) {
      const double f = a[r][col] / a[col][col];
      if (f == 0) continue;
      for (size_t c = col; c < n; ++c) a[r][c] -= f * a[col][c];
      b[r] -= f * b[col];
    }
  }
  for (size_t i = n; i-- > 0;) {
    double s = b[i];
    for (size_t c = i + 1; c < n; ++c) s -= a[i][c] * b[c];
    b[i] = s / a[i][i];
  }
  return absl::OkStatus();
}

}  // namespace

double PhaseType::Mean() const {
  // E[S] = sum over phases of P(visit phase i) / rate_i.
  double mean = 0, reach = 0;
  for (size_t i = 0; i < rate.size(); ++i) {
    reach = reach * (i > 0 ? cont[i - 1] : 0.0) + start[i];
    mean += reach / rate[i];
  }
  return mean;
}

double PhaseType::SecondMoment() const {
  // E[S^2] by the moments of the remaining time from each phase, last to first:
  // R_i = X_i + cont_i R_{i+1}, X_i exponential: E[R_i] = 1/r + c E[R_{i+1}],
  // E[R_i^2] = 2/r^2 + 2 c E[R_{i+1}] / r + c E[R_{i+1}^2].
  const size_t k = rate.size();
  std::vector<double> m1(k + 1, 0.0), m2(k + 1, 0.0);
  for (size_t i = k; i-- > 0;) {
    const double r = rate[i], c = cont[i];
    m1[i] = 1 / r + c * m1[i + 1];
    m2[i] = 2 / (r * r) + 2 * c * m1[i + 1] / r + c * m2[i + 1];
  }
  double s = 0;
  for (size_t i = 0; i < k; ++i) s += start[i] * m2[i];
  return s;
}

absl::StatusOr<PhaseType> FitPhaseType(double mean, double scv) {
  if (!(mean > 0) || !(scv >= 0) || !std::isfinite(mean) || !std::isfinite(scv)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot fit mean ", mean, ", SCV ", scv));
  }
  PhaseType ph;
  if (scv >= 1) {
    // Hyperexponential H2 with balanced means: p1/mu1 = p2/mu2.
    const double p1 = 0.5 * (1 + std::sqrt((scv - 1) / (scv + 1)));
    ph.start = {p1, 1 - p1};
    ph.rate = {2 * p1 / mean, 2 * (1 - p1) / mean};
    ph.cont = {0, 0};
    if (p1 >= 1) {  // scv == 1 exactly gives p1 = 0.5; guard rounding
      ph.start = {1};
      ph.rate = {1 / mean};
      ph.cont = {0};
    }
    return ph;
  }
  // Mixture of Erlang(k-1) (probability p) and Erlang(k) with one rate, for
  // 1/k <= scv < 1/(k-1): a service of k phases that starts in the second
  // phase with probability p.
  const double c2 = std::max(scv, 1.0 / kMaxPhases);
  const int k = std::min(kMaxPhases, std::max(2, static_cast<int>(std::ceil(1 / c2 - 1e-12))));
  const double p = std::clamp((k * c2 - std::sqrt(std::max(0.0, k * (1 + c2) - k * k * c2))) / (1 + c2), 0.0, 1.0);
  const double mu = (k - p) / mean;
  ph.start.assign(k, 0.0);
  ph.start[0] = 1 - p;
  ph.start[1] += p;
  ph.rate.assign(k, mu);
  ph.cont.assign(k, 1.0);
  ph.cont[k - 1] = 0;
  return ph;
}

absl::StatusOr<QueueResult> SolveMG1K(const QueueModel& given) {
  auto with_moments = WithSampleMoments(given);
  if (!with_moments.ok()) return with_moments.status();
  const QueueModel& m = *with_moments;
  if (auto s = Validate(m); !s.ok()) return s;
  if (m.servers != 1) return absl::InvalidArgumentError("the M/G/1/K embedded chain needs servers == 1");
  const int K = m.capacity;
  // mu: arrivals that the work of one arrival lets in; the mean service with
  // that work is E[S0] / (1 - mu) (each arrival during a service adds mu more
  // on average, so lambda E[S0] (1 + mu + mu^2 + ...) arrive in all).
  const double mu = m.arrival_rate * m.arrival_work_s;
  const std::string work_note =
      m.arrival_work_s > 0 ? absl::StrCat(", each arrival adds ", m.arrival_work_s * 1e3, " ms of work") : "";
  if (mu >= 1) {  // the arrivals' own handling takes the whole core
    std::vector<double> p(K + 1, 0.0);
    p[K] = 1;
    return Finish(m, std::move(p), absl::StrCat("M/G/1/K embedded chain", work_note, ": saturated by the arrivals' work"));
  }
  QueueModel eff = m;  // its service_mean_s: E[S], the arrivals' work included
  eff.service_mean_s = m.service_mean_s / (1 - mu);
  const double rho = m.arrival_rate * eff.service_mean_s;
  if (rho == 0) {
    std::vector<double> p(K + 1, 0.0);
    p[0] = 1;
    return Finish(eff, std::move(p), "M/G/1/K embedded chain");
  }
  // a[j]: probability of j arrivals during one service (during S0 without arrival work).
  std::vector<double> a(K, 0.0);
  const bool empirical = !m.service_samples_s.empty();
  if (empirical) {  // the average of Poisson(lambda s) over the samples s
    for (double s : m.service_samples_s) {
      const double ls = m.arrival_rate * s;
      double pj = std::exp(-ls);  // P(j arrivals), by P(j) = P(j - 1) ls / j
      for (int j = 0; j < K; ++j) {
        a[j] += pj;
        pj *= ls / (j + 1);
      }
    }
    for (double& x : a) x /= static_cast<double>(m.service_samples_s.size());
  } else if (m.service_scv < 1e-9) {  // deterministic: Poisson(lambda S0)
    const double r0 = m.arrival_rate * m.service_mean_s;
    for (int j = 0; j < K; ++j) a[j] = std::exp(-r0 + j * std::log(r0) - std::lgamma(j + 1.0));
  } else {  // gamma(shape alpha, scale theta): negative binomial
    const double alpha = 1 / m.service_scv;
    const double theta = m.service_mean_s * m.service_scv;
    const double lt = m.arrival_rate * theta;
    const double log_p = -std::log1p(lt), log_q = std::log(lt) - std::log1p(lt);
    for (int j = 0; j < K; ++j) {
      a[j] = std::exp(std::lgamma(alpha + j) - std::lgamma(alpha) - std::lgamma(j + 1.0) + alpha * log_p + j * log_q);
    }
  }
  if (mu > 0) {
    // With arrival work, j arrivals during S0 start a branching process with
    // Poisson(mu) offspring; the total arrivals t >= j are Borel-Tanner:
    // P(t | j) = (j / t) e^(-mu t) (mu t)^(t - j) / (t - j)!.
    std::vector<double> total(K, 0.0);
    total[0] = a[0];
    for (int t = 1; t < K; ++t) {
      for (int j = 1; j <= t; ++j) {
        if (a[j] <= 0) continue;
        total[t] += a[j] * std::exp(std::log(static_cast<double>(j) / t) - mu * t + (t - j) * std::log(mu * t) -
                                    std::lgamma(t - j + 1.0));
      }
    }
    a = std::move(total);
  }
  // Departure-epoch chain on 0..K-1: from i (>= 1) to i - 1 + j after j
  // arrivals; from 0 as from 1. Overflow beyond K - 1 is clamped to K - 1.
  std::vector<std::vector<double>> P(K, std::vector<double>(K, 0.0));
  for (int i = 0; i < K; ++i) {
    const int base = std::max(i - 1, 0);
    double acc = 0;
    for (int t = base; t < K - 1; ++t) {
      P[i][t] = a[t - base];
      acc += a[t - base];
    }
    P[i][K - 1] = std::max(0.0, 1 - acc);
  }
  // pi (P - I) = 0 with sum pi = 1: transpose, replace the last equation.
  std::vector<std::vector<double>> A(K, std::vector<double>(K, 0.0));
  std::vector<double> b(K, 0.0);
  for (int r = 0; r < K; ++r) {
    for (int c = 0; c < K; ++c) A[r][c] = P[c][r] - (r == c ? 1.0 : 0.0);
  }
  for (int c = 0; c < K; ++c) A[K - 1][c] = 1;
  b[K - 1] = 1;
  if (auto s = SolveDense(A, b); !s.ok()) return s;
  const double denom = b[0] + rho;
  std::vector<double> p(K + 1, 0.0);
  for (int j = 0; j < K; ++j) p[j] = std::max(0.0, b[j]) / denom;
  p[K] = std::max(0.0, 1 - 1 / denom);
  return Finish(eff, std::move(p),
                absl::StrCat(empirical ? absl::StrCat("M/G/1/K embedded chain (empirical service, ",
                                                      m.service_samples_s.size(), " samples)")
                             : m.service_scv < 1e-9 ? "M/D/1/K embedded chain"
                                                    : "M/G/1/K embedded chain (gamma service)",
                             work_note));
}

absl::StatusOr<QueueResult> SolveMPHcK(const QueueModel& given) {
  auto with_moments = WithSampleMoments(given);
  if (!with_moments.ok()) return with_moments.status();
  const QueueModel& m = *with_moments;
  if (auto s = Validate(m); !s.ok()) return s;
  auto fit = FitPhaseType(m.service_mean_s, m.service_scv);
  if (!fit.ok()) return fit.status();
  const PhaseType& ph = *fit;
  const int k = static_cast<int>(ph.rate.size());
  const int c = m.servers, K = m.capacity;
  // States: (n, busy servers per phase), enumerated level by level.
  std::map<std::vector<int>, int> index;  // key: [n, m_0, ..., m_{k-1}]
  std::vector<std::vector<int>> states;
  std::vector<int> level_of;
  for (int n = 0; n <= K; ++n) {
    const int busy = std::min(n, c);
    std::vector<int> counts(k, 0);
    // Every composition of `busy` into k parts.
    std::function<void(int, int)> gen = [&](int i, int left) {
      if (i == k - 1) {
        counts[i] = left;
        std::vector<int> key = {n};
        key.insert(key.end(), counts.begin(), counts.end());
        index[key] = static_cast<int>(states.size());
        states.push_back(key);
        level_of.push_back(n);
        return;
      }
      for (int x = left; x >= 0; --x) {
        counts[i] = x;
        gen(i + 1, left - x);
      }
    };
    gen(0, busy);
    if (states.size() > 400000) {
      return absl::ResourceExhaustedError(absl::StrCat("M/PH/c/K state space too large (", c, " servers, ", k,
                                                       " phases, capacity ", K, ")"));
    }
  }
  const size_t S = states.size();
  // Incoming transitions per state and total out-rate per state.
  std::vector<std::vector<std::pair<int, double>>> in(S);
  std::vector<double> out_rate(S, 0.0);
  auto add = [&](int from, std::vector<int> to, double rate) {
    if (rate <= 0) return;
    const int j = index.at(to);
    in[j].emplace_back(from, rate);
    out_rate[from] += rate;
  };
  const double lambda = m.arrival_rate;
  for (size_t s = 0; s < S; ++s) {
    const std::vector<int>& st = states[s];
    const int n = st[0];
    if (n < K) {
      if (n < c) {
        for (int j = 0; j < k; ++j) {
          std::vector<int> to = st;
          to[0] = n + 1;
          to[1 + j] += 1;
          add(static_cast<int>(s), to, lambda * ph.start[j]);
        }
      } else {
        std::vector<int> to = st;
        to[0] = n + 1;
        add(static_cast<int>(s), to, lambda);
      }
    }
    for (int i = 0; i < k; ++i) {
      if (st[1 + i] == 0) continue;
      const double r = st[1 + i] * ph.rate[i];
      if (ph.cont[i] > 0) {
        std::vector<int> to = st;
        to[1 + i] -= 1;
        to[2 + i] += 1;
        add(static_cast<int>(s), to, r * ph.cont[i]);
      }
      const double done = r * (1 - ph.cont[i]);
      if (done <= 0) continue;
      if (n > c) {  // the next waiting request starts service
        for (int j = 0; j < k; ++j) {
          std::vector<int> to = st;
          to[0] = n - 1;
          to[1 + i] -= 1;
          to[1 + j] += 1;
          add(static_cast<int>(s), to, done * ph.start[j]);
        }
      } else {
        std::vector<int> to = st;
        to[0] = n - 1;
        to[1 + i] -= 1;
        add(static_cast<int>(s), to, done);
      }
    }
  }
  // Gauss-Seidel on pi Q = 0: pi_j = sum_i pi_i q_ij / q_j, renormalised.
  std::vector<double> pi(S, 1.0 / static_cast<double>(S));
  bool converged = false;
  for (int iter = 0; iter < 200000 && !converged; ++iter) {
    double change = 0;
    for (size_t j = 0; j < S; ++j) {
      if (out_rate[j] <= 0) continue;
      double acc = 0;
      for (const auto& [i, r] : in[j]) acc += pi[i] * r;
      const double v = acc / out_rate[j];
      change += std::abs(v - pi[j]);
      pi[j] = v;
    }
    double total = std::accumulate(pi.begin(), pi.end(), 0.0);
    for (double& x : pi) x /= total;
    converged = change / total < 1e-13;
  }
  if (!converged) return absl::InternalError("M/PH/c/K Gauss-Seidel did not converge");
  std::vector<double> p(K + 1, 0.0);
  for (size_t s = 0; s < S; ++s) p[level_of[s]] += pi[s];
  return Finish(m, std::move(p), absl::StrCat("M/PH/c/K Markov chain (", k, "-phase two-moment fit)"));
}

QueueResult SolveMMcK(const QueueModel& m) {
  const int c = m.servers, K = m.capacity;
  const double a = m.arrival_rate * m.service_mean_s;  // offered load in servers
  // Unnormalised p_n in logs: n <= c: a^n / n!; n > c: a^n / (c! c^(n-c)).
  std::vector<double> logp(K + 1);
  for (int n = 0; n <= K; ++n) {
    const double la = a > 0 ? n * std::log(a) : (n == 0 ? 0.0 : -INFINITY);
    logp[n] = n <= c ? la - std::lgamma(n + 1.0) : la - std::lgamma(c + 1.0) - (n - c) * std::log(double(c));
  }
  const double mx = *std::max_element(logp.begin(), logp.end());
  std::vector<double> p(K + 1);
  for (int n = 0; n <= K; ++n) p[n] = std::exp(logp[n] - mx);
  return Finish(m, std::move(p), "M/M/c/K closed form");
}

absl::StatusOr<QueueResult> SolveQueue(const QueueModel& m) {
  // Each validates (samples included) itself.
  return m.servers == 1 ? SolveMG1K(m) : SolveMPHcK(m);
}

absl::StatusOr<QueueResult> SolveSlowlyVarying(const QueueModel& m, const std::vector<ServiceRegime>& regimes) {
  if (regimes.empty()) return absl::InvalidArgumentError("no service regimes");
  double total_weight = 0;
  for (const ServiceRegime& g : regimes) {
    if (!(g.weight >= 0) || !std::isfinite(g.weight)) {
      return absl::InvalidArgumentError(absl::StrCat("regime weight ", g.weight, " must be >= 0"));
    }
    total_weight += g.weight;
  }
  if (!(total_weight > 0)) return absl::InvalidArgumentError("every regime weight is 0");
  QueueResult r;
  r.p.assign(m.capacity + 1, 0.0);
  double mean_service = 0, busy = 0;
  std::string method;
  // E[S] in a regime, the arrivals' work included (SolveQueue's utilization = throughput E[S] / c).
  const double mu = m.arrival_rate * m.arrival_work_s;
  const double stretch = mu < 1 ? 1 / (1 - mu) : 1.0;
  for (const ServiceRegime& g : regimes) {
    if (g.weight == 0) continue;
    const double w = g.weight / total_weight;
    QueueModel one = m;
    one.service_mean_s = g.service_mean_s;
    one.service_scv = g.service_scv;
    one.service_samples_s.clear();
    auto s = SolveQueue(one);
    if (!s.ok()) return s.status();
    r.loss_probability += w * s->loss_probability;
    r.mean_in_system += w * s->mean_in_system;
    r.throughput += w * s->throughput;
    const double served = g.service_mean_s * stretch;
    busy += w * s->throughput * served;
    mean_service += w * served;
    for (size_t n = 0; n < r.p.size() && n < s->p.size(); ++n) r.p[n] += w * s->p[n];
    if (method.empty()) method = s->method;
  }
  r.mean_sojourn_s = r.throughput > 0 ? r.mean_in_system / r.throughput : mean_service;
  // Accepted requests are served at the speed of the regime they came in.
  const double served_mean = r.throughput > 0 ? busy / r.throughput : mean_service;
  r.mean_wait_s = std::max(0.0, r.mean_sojourn_s - served_mean);
  r.utilization = busy / m.servers;
  r.method = absl::StrCat(method, ", averaged over ", regimes.size(), " service-speed regimes");
  return r;
}

std::vector<ServiceRegime> RegimesFromWindows(const std::vector<std::vector<double>>& windows) {
  std::vector<double> means;
  std::vector<int64_t> counts;
  double within = 0, grand = 0;
  int64_t n_total = 0;
  for (const auto& w : windows) {
    if (w.size() < 2) continue;
    const ServiceMoments s = ComputeServiceMoments(w);
    if (!(s.mean > 0)) continue;
    means.push_back(s.mean);
    counts.push_back(s.n);
    within += s.scv * static_cast<double>(s.n);
    grand += s.mean * static_cast<double>(s.n);
    n_total += s.n;
  }
  std::vector<ServiceRegime> out;
  if (means.empty()) return out;
  within /= static_cast<double>(n_total);
  grand /= static_cast<double>(n_total);
  const double k = static_cast<double>(means.size());
  double observed = 0, noise = 0;
  for (size_t i = 0; i < means.size(); ++i) {
    observed += (means[i] - grand) * (means[i] - grand) / k;
    noise += within * means[i] * means[i] / static_cast<double>(counts[i]) / k;
  }
  const double shrink = observed > noise ? std::sqrt(1 - noise / observed) : 0.0;
  for (double mean : means) {
    ServiceRegime g;
    g.weight = 1;
    g.service_mean_s = grand + shrink * (mean - grand);
    g.service_scv = within;
    out.push_back(g);
  }
  return out;
}

ServiceMoments ComputeServiceMoments(const std::vector<double>& samples) {
  ServiceMoments s;
  s.n = static_cast<int64_t>(samples.size());
  if (samples.empty()) return s;
  for (double x : samples) {
    s.mean += x;
    s.second_moment += x * x;
  }
  s.mean /= static_cast<double>(s.n);
  s.second_moment /= static_cast<double>(s.n);
  s.scv = s.mean > 0 ? std::max(0.0, s.second_moment / (s.mean * s.mean) - 1) : 0.0;
  return s;
}

}  // namespace eenn::common
