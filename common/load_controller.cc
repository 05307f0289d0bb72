#include "common/load_controller.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/queueing.h"

namespace eenn::common {
namespace {

// Arrivals during services (time-weighted) before the work per arrival is trusted.
constexpr double kMinWorkArrivals = 20;
// ... and a spread of arrivals per service to fit a slope over.
constexpr double kMinArrivalVariance = 0.05;

// Weight an old value keeps after dt seconds with this half-life.
double Keep(double dt, double half_life_s) { return std::pow(0.5, std::max(0.0, dt) / std::max(half_life_s, 1e-9)); }

}  // namespace

absl::StatusOr<LoadController> LoadController::Create(ConfigSet set, const LoadControllerOptions& options) {
  if (set.configs.empty()) return absl::InvalidArgumentError("load controller: no configurations");
  if (!(options.loss_target > 0 && options.loss_target < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("load controller: loss target ", options.loss_target,
                                                   " is not in (0, 1)"));
  }
  if (options.workers < 1 || options.queue_capacity < 1) {
    return absl::InvalidArgumentError("load controller: workers and queue capacity must be >= 1");
  }
  if (options.initial_config < 0 || options.initial_config >= static_cast<int>(set.configs.size())) {
    return absl::InvalidArgumentError(absl::StrCat("load controller: initial configuration ", options.initial_config,
                                                   " is out of range [0, ", set.configs.size(), ")"));
  }
  if (!(options.high_water > 0 && options.high_water <= 1) || !(options.drain_s > 0) ||
      !(options.pressure_margin >= 0) || !(options.pressure_settle_s >= 0) || !(options.burst_window_s >= 0) ||
      !(options.rate_window_s >= 0) || !(options.rate_z >= 0) || !(options.busy_z >= 0) || !(options.dwell_s >= 0) ||
      !(options.up_rate_margin >= 0) || !(options.up_loss_margin > 0 && options.up_loss_margin <= 1)) {
    return absl::InvalidArgumentError(
        "load controller: high water in (0, 1]; drain time > 0; rate windows, rate bound z's, dwell, rate and "
        "pressure margins and pressure settle time >= 0; loss margin in (0, 1]");
  }
  return LoadController(std::move(set), options);
}

LoadController::LoadController(ConfigSet set, const LoadControllerOptions& options)
    : set_(std::move(set)), options_(options) {
  state_.config = options_.initial_config;
  state_.fixed_ms = options_.initial_fixed_ms;
  state_.remote_ms = options_.initial_remote_ms;
  state_.expected_accuracy = set_.configs[state_.config].accuracy;
}

void LoadController::AddArrivals(int64_t count) { arrivals_since_tick_ += count; }

void LoadController::AddService(const ServiceObservation& o, double now_s) {
  if (o.config < 0 || o.config >= static_cast<int>(set_.configs.size())) return;
  const ExitConfig& c = set_.configs[o.config];
  if (o.exit < 0 || o.exit >= static_cast<int>(c.exit_device_ms.size())) return;
  const double dt = last_service_s_ < 0 ? 0 : now_s - last_service_s_;
  last_service_s_ = std::max(last_service_s_, now_s);
  const double keep = Keep(dt, options_.service_half_life_s);
  // Speed factor: ratio of time-decayed sums of measured and expected compute.
  measured_device_ = keep * measured_device_ + o.device_ms;
  expected_device_ = keep * expected_device_ + c.exit_device_ms[o.exit];
  if (expected_device_ > 1e-9 && measured_device_ > 0) state_.speed_factor = measured_device_ / expected_device_;
  // Averages per sample: at least 5% weight for each new one.
  const double w = std::min(0.95, keep);
  state_.fixed_ms = fixed_known_ ? w * state_.fixed_ms + (1 - w) * o.fixed_ms : o.fixed_ms;
  fixed_known_ = true;
  if (o.offloaded) {
    state_.remote_ms = remote_known_ ? w * state_.remote_ms + (1 - w) * o.remote_ms : o.remote_ms;
    remote_known_ = true;
  }
  if (options_.arrival_work && options_.workers == 1 && o.stolen_ms >= 0 && !o.offloaded) {
    // The work per arrival is the slope of the stolen time over the arrivals
    // per service (least squares, time-weighted): what other threads take
    // whatever the arrivals (the reply hand-off's wake-up, scrapes, other
    // processes) is the intercept and stays in the service.
    const double a = static_cast<double>(std::max<int64_t>(0, o.arrivals));
    work_n_ = keep * work_n_ + 1;
    work_a_ = keep * work_a_ + a;
    work_aa_ = keep * work_aa_ + a * a;
    work_s_ = keep * work_s_ + o.stolen_ms;
    work_as_ = keep * work_as_ + a * o.stolen_ms;
    work_b_ = keep * work_b_ + o.fixed_ms + o.device_ms + o.remote_ms;
    const double var_a = work_aa_ / work_n_ - (work_a_ / work_n_) * (work_a_ / work_n_);
    if (work_a_ >= kMinWorkArrivals && var_a > kMinArrivalVariance) {
      const double cov = work_as_ / work_n_ - (work_a_ / work_n_) * (work_s_ / work_n_);
      state_.arrival_work_ms = std::max(0.0, cov / var_a);
      // Its share of the busy time at the rate measured: lambda W = W E[a] / E[busy].
      state_.work_share = work_b_ > 0 ? std::min(0.9, state_.arrival_work_ms * work_a_ / work_b_) : 0.0;
    }
  }
}

ConfigPrediction LoadController::PredictOne(int index, double rate) const {
  const ExitConfig& c = set_.configs[index];
  const int num_layers = set_.exit_layers.back() + 1;
  const size_t g_count = set_.exit_layers.size();
  // The measured parts hold the time the arrivals' work took from the
  // services at the rate they were measured at, in proportion to their length
  // (E[S | S0] = S0 / (1 - lambda W)); without it (S0) the work is added back
  // at the rate predicted for.
  const double base = 1 - state_.work_share;
  double mean = 0, m2 = 0;
  for (size_t g = 0; g < g_count; ++g) {
    const bool offloaded = c.split < num_layers && (g + 1 == g_count || set_.exit_layers[g] >= c.split);
    const double s =
        base * (state_.fixed_ms + state_.speed_factor * c.exit_device_ms[g] + (offloaded ? state_.remote_ms : 0));
    mean += c.exit_share[g] * s;
    m2 += c.exit_share[g] * s * s;
  }
  ConfigPrediction p;
  p.base_service_mean_ms = mean;
  p.service_mean_ms = mean;
  p.service_scv = mean > 0 ? std::max(0.0, m2 / (mean * mean) - 1) : 0;
  if (mean <= 0 || rate <= 0) return p;
  const double work_load = rate * state_.arrival_work_ms / 1000.0;
  if (work_load >= 1) {  // the arrivals' handling alone takes the core
    p.service_mean_ms = INFINITY;
    p.loss = 1;
    return p;
  }
  p.service_mean_ms = mean / (1 - work_load);
  p.loss = Loss(rate * mean / 1000.0, p.service_scv, work_load);
  return p;
}

double LoadController::Loss(double offered, double scv, double work_load) const {
  const double step = std::log(1.01);
  const int rho_key = static_cast<int>(std::lround(std::log(offered) / step));
  const int scv_key = static_cast<int>(std::lround(scv / 0.05));
  const int work_key = static_cast<int>(std::lround(work_load / 0.005));
  const auto key = std::make_tuple(rho_key, scv_key, work_key);
  if (auto it = loss_cache_.find(key); it != loss_cache_.end()) return it->second;
  const double mu = work_key * 0.005;
  if (mu >= 1) {  // the arrivals' handling alone takes the core
    loss_cache_.emplace(key, 1.0);
    return 1.0;
  }
  // The c workers pooled into one server c times as fast (M/G/1/K by the
  // embedded chain, milliseconds at most): the M/PH/c/K chain takes seconds
  // per solve near saturation with a low SCV, too slow for a control loop,
  // and the two differ only when fewer than c requests are in the system,
  // where the loss is negligible against any useful target.
  QueueModel m;
  m.arrival_rate = std::exp(rho_key * step);  // per second, with E[S] = 1 s
  m.service_mean_s = 1.0 / options_.workers;
  m.service_scv = scv_key * 0.05;
  m.servers = 1;
  m.capacity = options_.queue_capacity + options_.workers;
  m.arrival_work_s = mu / m.arrival_rate;  // lambda W = mu (E[S0] = 1 s per worker)
  // Whatever the model: throughput <= c / E[S], so loss >= 1 - c / (lambda E[S]),
  // with E[S] = E[S0] / (1 - mu).
  const double bound = std::max(0.0, 1.0 - options_.workers * (1 - mu) / m.arrival_rate);
  auto r = SolveMG1K(m);
  // The closed form of exponential service (with the work's mean) when the two-moment model fails.
  QueueModel exp_m = m;
  exp_m.service_mean_s = m.service_mean_s / (1 - mu);
  const double loss = std::max(bound, r.ok() ? r->loss_probability : SolveMMcK(exp_m).loss_probability);
  loss_cache_.emplace(key, loss);
  return loss;
}

std::vector<ConfigPrediction> LoadController::Predict(double rate) const {
  std::vector<ConfigPrediction> out;
  for (int c = 0; c < static_cast<int>(set_.configs.size()); ++c) out.push_back(PredictOne(c, rate));
  return out;
}

ControllerState LoadController::Tick(int queue_length, double now_s) {
  // The busy stretch is for this decision only.
  const int64_t stretch_gaps = stretch_gaps_;
  const double stretch_span_s = stretch_span_s_;
  stretch_gaps_ = 0;
  stretch_span_s_ = 0;
  state_.changed = false;
  state_.queue_length = queue_length;
  if (last_tick_s_ < 0 || now_s <= last_tick_s_) {
    // First tick (or no time passed): nothing to measure a rate over yet.
    if (last_tick_s_ < 0) {
      last_tick_s_ = now_s;
      arrivals_since_tick_ = 0;
    }
    return state_;
  }
  const double dt = now_s - last_tick_s_;
  const double tick_rate = arrivals_since_tick_ / dt;
  recent_.emplace_back(dt, arrivals_since_tick_);
  arrivals_since_tick_ = 0;
  last_tick_s_ = now_s;
  // Keep the ticks that cover the longer of the two windows.
  const double keep_s = std::max(options_.burst_window_s, options_.rate_window_s);
  double span = 0;
  for (const auto& tick : recent_) span += tick.first;
  while (recent_.size() > 1 && span - recent_.front().first >= keep_s - 1e-9) {
    span -= recent_.front().first;
    recent_.pop_front();
  }
  // Arrivals over (at least) the last `w` seconds of ticks.
  auto window = [this](double w) {
    double t = 0;
    int64_t n = 0;
    for (auto it = recent_.rbegin(); it != recent_.rend(); ++it) {
      t += it->first;
      n += it->second;
      if (t >= w - 1e-9) break;
    }
    return std::make_pair(n, t);
  };
  // Bounds of the rate that n arrivals over t seconds show: n -/+ z sqrt(n)
  // (Poisson counts), so that a move needs evidence, not a lucky tick.
  const double z = options_.rate_z;
  auto lower = [z](int64_t n, double t) {
    return t > 0 ? std::max(0.0, (n - z * std::sqrt(static_cast<double>(n))) / t) : 0.0;
  };
  auto upper = [z](int64_t n, double t) {
    return t > 0 ? (n + z * std::sqrt(static_cast<double>(std::max<int64_t>(n, 1)))) / t : 0.0;
  };
  const auto [short_n, short_t] = window(options_.burst_window_s);
  const auto [long_n, long_t] = window(options_.rate_window_s);
  state_.last_rate = short_t > 0 ? short_n / short_t : 0;
  if (!rate_known_) {
    state_.arrival_rate = tick_rate;
    rate_known_ = true;
  } else {
    const double keep = Keep(dt, options_.rate_half_life_s);
    state_.arrival_rate = keep * state_.arrival_rate + (1 - keep) * tick_rate;
  }
  const double high_water = options_.high_water * options_.queue_capacity;
  // Down: the rate the windows show at least; up: at most.
  double rate = std::max(lower(short_n, short_t), lower(long_n, long_t));
  const double up_rate =
      std::max(upper(short_n, short_t), upper(long_n, long_t)) * (1 + options_.up_rate_margin);
  if (queue_length >= high_water) {
    if (high_since_s_ < 0) high_since_s_ = now_s;
    // The busy stretch's rate counts when the queue at high water says the
    // arrivals outpace service (it sees a burst from its first arrival on).
    if (stretch_gaps > 0 && stretch_span_s > 0) {
      const double n = static_cast<double>(stretch_gaps);
      rate = std::max(rate, std::max(0.0, n - options_.busy_z * std::sqrt(n)) / stretch_span_s);
    }
    // A queue at high water for pressure_settle_s, under a configuration in
    // use at least as long: the service model overestimates that
    // configuration (slower device, other load): decide for at least its
    // capacity times (1 + margin).
    const double since = std::max(high_since_s_, config_since_s_);
    if (options_.pressure_margin > 0 && now_s - since >= options_.pressure_settle_s - 1e-9) {
      // The capacity: workers / E[S]; with the arrivals' work (one worker),
      // the rate at which lambda E[S0] / (1 - lambda W) = 1: 1 / (E[S0] + W).
      const double service_ms =
          PredictOne(state_.config, rate).base_service_mean_ms + state_.arrival_work_ms;
      if (service_ms > 0) {
        rate = std::max(rate, options_.workers * 1000.0 / service_ms * (1 + options_.pressure_margin));
      }
    }
    rate += (queue_length - high_water) / options_.drain_s;
  } else {
    high_since_s_ = -1;
  }
  state_.rate_used = rate;
  state_.predictions = Predict(rate);
  const int n = static_cast<int>(set_.configs.size());
  const double target = options_.loss_target;
  int next = state_.config;
  if (state_.predictions[state_.config].loss > target) {
    // Down at once: the most accurate configuration that meets the target,
    // else the one predicted to lose least.
    next = -1;
    for (int c = 0; c < n && next < 0; ++c) {
      if (state_.predictions[c].loss <= target) next = c;
    }
    if (next < 0) {
      next = 0;
      for (int c = 1; c < n; ++c) {
        if (state_.predictions[c].loss < state_.predictions[next].loss) next = c;
      }
    }
    up_since_s_ = -1;
  } else if (state_.config > 0) {
    // Up after the dwell: the most accurate configuration that meets the
    // target (times the loss margin) at the most the windows show (times the
    // rate margin). The dwell survives a queue at high water; the move waits
    // for it to fall below.
    int candidate = -1;
    for (int c = 0; c < state_.config && candidate < 0; ++c) {
      if (PredictOne(c, up_rate).loss <= target * options_.up_loss_margin) candidate = c;
    }
    if (candidate < 0) {
      up_since_s_ = -1;
    } else {
      if (up_since_s_ < 0) up_since_s_ = now_s;
      if (now_s - up_since_s_ >= options_.dwell_s - 1e-9 && queue_length < high_water) {
        next = candidate;
        up_since_s_ = -1;
      }
    }
  } else {
    up_since_s_ = -1;
  }
  if (next != state_.config) {
    config_since_s_ = now_s;
    state_.config = next;
    state_.changed = true;
    ++state_.changes;
  }
  state_.expected_accuracy = set_.configs[state_.config].accuracy;
  state_.predicted_loss = state_.predictions[state_.config].loss;
  return state_;
}

}  // namespace eenn::common
