#include "common/control_sim.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace eenn::common {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool Offloaded(const ConfigSet& set, const ExitConfig& c, size_t g) {
  const int num_layers = set.exit_layers.back() + 1;
  return c.split < num_layers && (g + 1 == set.exit_layers.size() || set.exit_layers[g] >= c.split);
}

// Compute of the whole network to the final exit (for the local fallback).
double FullComputeMs(const ConfigSet& set) {
  const int num_layers = set.exit_layers.back() + 1;
  double full = 0, any = 0;
  for (const ExitConfig& c : set.configs) {
    if (c.exit_device_ms.empty()) continue;
    any = std::max(any, *std::max_element(c.exit_device_ms.begin(), c.exit_device_ms.end()));
    if (c.split >= num_layers) full = std::max(full, c.exit_device_ms.back());
  }
  return full > 0 ? full : any;
}

struct Parts {
  double fixed = 0, device = 0, remote = 0;
  double total() const { return fixed + device + remote; }
};

Parts MeanParts(const ConfigSet& set, const ExitConfig& c, size_t g, const SimServiceModel& m, double full_ms) {
  Parts p;
  p.fixed = m.fixed_ms;
  p.device = m.speed_factor * c.exit_device_ms[g];
  if (Offloaded(set, c, g)) {
    p.remote = m.remote_ms + (m.local_fallback ? m.speed_factor * std::max(0.0, full_ms - c.exit_device_ms[g]) : 0);
  }
  return p;
}

struct Busy {
  double until = kInf;
  int config = 0;
  size_t exit = 0;
  Parts parts;
  size_t arrival = 0;  // index of the request
  double stolen_ms = 0;  // the arrivals' work added to it
  int64_t arrivals = 0;  // arrivals during it
};

}  // namespace

std::vector<double> OnOffTrace(double calm_rate, double calm_s, double burst_rate, double burst_s, int cycles,
                               bool poisson, uint64_t seed) {
  std::vector<double> out;
  std::mt19937_64 rng(seed);
  double start = 0;
  for (int k = 0; k < cycles; ++k) {
    for (const auto& [len, rate] : {std::make_pair(calm_s, calm_rate), std::make_pair(burst_s, burst_rate)}) {
      const double end = start + len;
      std::exponential_distribution<double> gap(rate);
      for (double a = start + (poisson ? gap(rng) : 0); a < end - 1e-9; a += poisson ? gap(rng) : 1 / rate) {
        out.push_back(a);
      }
      start = end;
    }
  }
  return out;
}

ConfigSet FixedDeviceSet(const ConfigSet& like, double service_ms, double accuracy, const SimServiceModel& service) {
  ConfigSet set = like;
  ExitConfig f;
  const size_t g = like.exit_layers.size();
  f.split = like.exit_layers.back() + 1;
  f.thresholds.assign(g, -1.0f);
  f.thresholds.back() = 0.0f;
  f.accuracy = accuracy;
  f.exit_share.assign(g, 0.0);
  f.exit_share.back() = 1.0;
  f.exit_device_ms.assign(g, 0.0);
  f.exit_device_ms.back() = std::max(0.0, service_ms - service.fixed_ms) / service.speed_factor;
  f.device_ms = f.exit_device_ms.back();
  set.configs = {f};
  return set;
}

absl::StatusOr<SimResult> SimulateLoadControl(const ConfigSet& set, const std::vector<double>& arrivals,
                                              const SimServiceModel& service, const SimOptions& options) {
  if (set.configs.empty() || set.exit_layers.empty()) return absl::InvalidArgumentError("simulation: no configurations");
  for (const ExitConfig& c : set.configs) {
    if (c.exit_share.size() != set.exit_layers.size() || c.exit_device_ms.size() != set.exit_layers.size()) {
      return absl::InvalidArgumentError("simulation: a configuration's exit shares or costs do not match its exits");
    }
  }
  for (size_t i = 0; i < arrivals.size(); ++i) {
    if (!(arrivals[i] >= 0) || (i > 0 && arrivals[i] < arrivals[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("simulation: arrival ", i, " (", arrivals[i],
                                                     " s) is negative or before the one before it"));
    }
  }
  if (options.static_config >= static_cast<int>(set.configs.size())) {
    return absl::InvalidArgumentError(absl::StrCat("simulation: static configuration ", options.static_config,
                                                   " is out of range [0, ", set.configs.size(), ")"));
  }
  if (!(options.interval_s > 0) || options.min_tick_gap_s < 0 || !(options.window_s > 0) ||
      service.fixed_ms < 0 || !(service.speed_factor > 0) || service.remote_ms < 0 ||
      service.noise_cv < 0 || !(service.arrival_work_ms >= 0)) {
    return absl::InvalidArgumentError(
        "simulation: interval and window must be > 0, speed factor > 0; tick gap, service parts, noise and arrival "
        "work >= 0");
  }
  if (service.arrival_work_ms > 0 && options.controller.workers != 1) {
    return absl::InvalidArgumentError("simulation: arrival work is modelled for one worker only");
  }
  const bool controlled = options.static_config < 0;
  LoadControllerOptions copts = options.controller;
  if (!controlled) copts.initial_config = options.static_config;
  EENN_ASSIGN_OR_RETURN(LoadController controller, LoadController::Create(set, copts));
  const int workers = copts.workers;
  const int capacity = copts.queue_capacity;
  const double full_ms = FullComputeMs(set);

  std::mt19937_64 rng(options.seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  // Log-normal with mean 1 and coefficient of variation noise_cv.
  const double sigma2 = std::log(1 + service.noise_cv * service.noise_cv);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto noise = [&]() { return sigma2 > 0 ? std::exp(-sigma2 / 2 + std::sqrt(sigma2) * normal(rng)) : 1.0; };

  SimResult r;
  const double horizon = arrivals.empty() ? 0 : arrivals.back();
  r.windows.resize(static_cast<size_t>(horizon / options.window_s) + 1);
  for (size_t w = 0; w < r.windows.size(); ++w) r.windows[w].start_s = w * options.window_s;
  auto window_of = [&](size_t i) -> SimWindow& {
    return r.windows[std::min(r.windows.size() - 1, static_cast<size_t>(arrivals[i] / options.window_s))];
  };

  int config = controller.state().config;
  std::deque<size_t> waiting;
  std::vector<Busy> busy(workers);
  std::vector<std::pair<ServiceObservation, double>> observed;  // since the last decision
  int64_t arrivals_since_tick = 0;
  const int high_water_count =
      copts.pressure_margin > 0 ? std::max(1, static_cast<int>(std::ceil(copts.high_water * capacity))) : 0;
  double next_tick = 0;       // the first decision starts the rate measurement
  double early_tick = kInf;   // a decision brought forward
  double early_allowed = 0;   // no decision brought forward before this

  auto start = [&](int w, size_t i, double now) {
    const ExitConfig& c = set.configs[config];
    double u = unit(rng), acc = 0;
    size_t g = c.exit_share.size() - 1;
    for (size_t k = 0; k < c.exit_share.size(); ++k) {
      acc += c.exit_share[k];
      if (u < acc) {
        g = k;
        break;
      }
    }
    Parts p = MeanParts(set, c, g, service, full_ms);
    p.fixed *= noise();
    p.device *= noise();
    p.remote *= noise();
    busy[w] = Busy{now + p.total() / 1000.0, config, g, p, i};
  };
  // The busy stretch: arrivals since one last found no request waiting, the
  // first's and the last's time.
  int64_t stretch_arrivals = 0;
  double stretch_first = 0, stretch_last = 0;

  size_t next_arrival = 0;
  for (;;) {
    size_t w_done = 0;
    double done_at = kInf;
    for (int w = 0; w < workers; ++w) {
      if (busy[w].until < done_at) {
        done_at = busy[w].until;
        w_done = static_cast<size_t>(w);
      }
    }
    const double arrival_at = next_arrival < arrivals.size() ? arrivals[next_arrival] : kInf;
    if (arrival_at == kInf && done_at == kInf) break;
    const double tick_at = controlled ? std::min(next_tick, early_tick) : kInf;
    if (done_at <= arrival_at && done_at <= tick_at) {
      Busy& b = busy[w_done];
      const double now = b.until;
      const ExitConfig& c = set.configs[b.config];
      SimWindow& win = window_of(b.arrival);
      ++win.answered;
      win.accuracy += c.accuracy;
      win.mean_config += b.config;
      ++r.answered;
      r.accuracy += c.accuracy;
      ServiceObservation o;
      o.config = b.config;
      o.exit = static_cast<int>(b.exit);
      // The arrivals' work lands in whichever part was running: in proportion.
      const double grow = b.parts.total() > 0 ? 1 + b.stolen_ms / b.parts.total() : 1;
      o.fixed_ms = b.parts.fixed * grow;
      o.device_ms = b.parts.device * grow;
      o.remote_ms = b.parts.remote * grow;
      o.offloaded = Offloaded(set, c, b.exit);
      if (service.arrival_work_ms > 0) {
        o.stolen_ms = b.stolen_ms;
        o.arrivals = b.arrivals;
      }
      if (controlled) observed.emplace_back(o, now);
      b.until = kInf;
      if (!waiting.empty()) {
        const size_t i = waiting.front();
        waiting.pop_front();
        start(static_cast<int>(w_done), i, now);
      }
    } else if (arrival_at <= tick_at) {
      const double now = arrival_at;
      const size_t i = next_arrival++;
      ++r.arrivals;
      ++window_of(i).arrivals;
      ++arrivals_since_tick;
      if (waiting.empty()) {
        stretch_arrivals = 0;
        stretch_first = now;
      }
      ++stretch_arrivals;
      stretch_last = now;
      // Its handling takes the core from the service in progress.
      if (service.arrival_work_ms > 0 && busy[0].until != kInf) {
        busy[0].until += service.arrival_work_ms / 1000.0;
        busy[0].stolen_ms += service.arrival_work_ms;
        ++busy[0].arrivals;
      }
      // As the device does: the arrival finds waiting.size() queued.
      if (controlled && high_water_count > 0 && static_cast<int>(waiting.size()) + 1 >= high_water_count &&
          early_tick == kInf) {
        early_tick = std::max(now, early_allowed);
      }
      int free_worker = -1;
      for (int w = 0; w < workers && free_worker < 0; ++w) {
        if (busy[w].until == kInf) free_worker = w;
      }
      if (free_worker >= 0) {
        start(free_worker, i, now);
      } else if (static_cast<int>(waiting.size()) < capacity) {
        waiting.push_back(i);
      } else {
        ++r.refused;
        ++window_of(i).refused;
      }
    } else {
      const double now = tick_at;
      const bool woken = early_tick <= next_tick;
      for (const auto& [o, t] : observed) controller.AddService(o, t);
      observed.clear();
      controller.AddArrivals(arrivals_since_tick);
      arrivals_since_tick = 0;
      const bool stretch = options.busy_rate && stretch_arrivals >= 2 && stretch_last > stretch_first;
      const int64_t gaps = stretch ? stretch_arrivals - 1 : 0;
      const double span = stretch ? stretch_last - stretch_first : 0;
      const double busy_now = span > 0 ? gaps / span : 0;
      controller.SetBusyStretch(gaps, span);
      const ControllerState& s = controller.Tick(static_cast<int>(waiting.size()), now);
      if (s.changed) {
        config = s.config;
        ++r.changes;
        r.config_changes.push_back({now, config, s.rate_used, s.arrival_rate, s.last_rate, busy_now, s.queue_length});
      }
      // The device's decision thread: after a decision brought forward it
      // waits the gap, then up to an interval.
      early_tick = kInf;
      early_allowed = woken ? now + options.min_tick_gap_s : now;
      next_tick = early_allowed + options.interval_s;
    }
  }
  r.loss_ratio = r.arrivals > 0 ? static_cast<double>(r.refused) / r.arrivals : 0;
  r.arrival_work_ms = controller.state().arrival_work_ms;
  if (r.answered > 0) r.accuracy /= r.answered;
  for (SimWindow& w : r.windows) {
    if (w.answered > 0) {
      w.accuracy /= w.answered;
      w.mean_config /= w.answered;
    }
  }
  return r;
}

}  // namespace eenn::common
