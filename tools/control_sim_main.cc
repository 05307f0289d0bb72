// eenn-control-sim: load-aware exits (eenn-device --loss_target) on a bursty
// arrival trace, simulated (common/control_sim.h): the device's own
// LoadController decides over a simulated queue whose service times follow the
// configurations' exit shares, against fixed thresholds on the same trace.
// Seconds per run, deterministic per seed: for studying the controller before
// measuring it on the real daemons (tools/bench/load_control_compare.py).
//
//   eenn-control-sim --configs models/cifar10-resnet18/configs.json
//     --baseline_ms 1.82 --baseline_accuracy 0.8792 --fixed_ms 0.68 --speed_factor 1.33 --local_fallback
//
// The trace: --cycles times --calm_s at --calm_x then --burst_s at --burst_x
// times the fixed device's capacity (--workers * 1000 / --baseline_ms), evenly
// spaced (as load_control_compare.py makes it), or --trace FILE (id,time CSV).
// The fixed device is simulated as one configuration of mean --baseline_ms
// (its measured service time) with the same noise.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/cli.h"
#include "common/config_set.h"
#include "common/control_sim.h"
#include "common/workload.h"

ABSL_FLAG(std::string, configs, "", "configs.json of the bundle (eenn-calibrate --configs).");
ABSL_FLAG(std::string, trace, "", "Arrival trace (CSV id,time in seconds); default: the on/off trace below.");
ABSL_FLAG(double, calm_x, 0.3, "Calm phases: arrival rate as a multiple of the fixed device's capacity.");
ABSL_FLAG(double, burst_x, 1.15, "Bursts: arrival rate as a multiple of the fixed device's capacity.");
ABSL_FLAG(double, calm_s, 4, "Length of a calm phase (s).");
ABSL_FLAG(double, burst_s, 3, "Length of a burst (s).");
ABSL_FLAG(int, cycles, 4, "Calm + burst cycles.");
ABSL_FLAG(bool, poisson, false, "Poisson arrivals within each phase (seeded per run) instead of evenly spaced.");
ABSL_FLAG(double, baseline_ms, 0, "The fixed device's mean service time per request (ms, measured).");
ABSL_FLAG(double, baseline_accuracy, 0, "The fixed thresholds' expected accuracy (0-1).");
ABSL_FLAG(double, fixed_ms, 0.7, "Service part every configuration pays (ms): preprocessing, hand-off.");
ABSL_FLAG(double, speed_factor, 1.0, "Device compute: measured / the configurations' expected.");
ABSL_FLAG(double, remote_ms, 0, "Offloaded requests: encode + round trip (ms).");
ABSL_FLAG(bool, local_fallback, false, "Offloaded requests finish on the device (no server).");
ABSL_FLAG(double, noise_cv, 0.1, "Coefficient of variation of each service part's noise.");
ABSL_FLAG(double, arrival_work_ms, 0,
          "Work each arrival adds to the service in progress (ms; one worker): the device's request handling on "
          "the worker's core. The service times above (--baseline_ms, --fixed_ms, ...) are then without it.");
ABSL_FLAG(bool, control_arrival_work, false, "eenn-device --control_arrival_work.");
ABSL_FLAG(int, workers, 1, "eenn-device --workers.");
ABSL_FLAG(int, queue_capacity, 32, "eenn-device --queue_capacity (the benchmark's; the device's default: 64).");
ABSL_FLAG(double, loss_target, 0.03, "eenn-device --loss_target.");
ABSL_FLAG(int, control_interval_ms, 100, "eenn-device --control_interval_ms (the benchmark's; the device's default: 250).");
ABSL_FLAG(int, control_dwell_ms, 1000, "eenn-device --control_dwell_ms (the benchmark's; the device's default: 3000).");
ABSL_FLAG(double, control_rate_half_life_s, 2.0, "eenn-device --control_rate_half_life_s.");
ABSL_FLAG(int, control_burst_window_ms, 250, "eenn-device --control_burst_window_ms.");
ABSL_FLAG(int, control_drain_ms, 1000, "eenn-device --control_drain_ms.");
ABSL_FLAG(double, control_pressure_margin, 0.1, "eenn-device --control_pressure_margin.");
ABSL_FLAG(int, control_pressure_settle_ms, 500, "eenn-device --control_pressure_settle_ms.");
ABSL_FLAG(bool, control_busy_rate, true, "eenn-device --control_busy_rate.");
ABSL_FLAG(int, control_rate_window_ms, 1000, "eenn-device --control_rate_window_ms.");
ABSL_FLAG(double, control_rate_z, 1.0, "eenn-device --control_rate_z.");
ABSL_FLAG(double, control_busy_z, 0.5, "eenn-device --control_busy_z.");
ABSL_FLAG(double, control_high_water, 0.75, "eenn-device --control_high_water.");
ABSL_FLAG(double, control_up_loss_margin, 0.8, "eenn-device --control_up_loss_margin.");
ABSL_FLAG(double, control_up_rate_margin, 0.05, "eenn-device --control_up_rate_margin.");
ABSL_FLAG(int, seeds, 5, "Runs (seeds 1..N); the summary gives each and the medians.");
ABSL_FLAG(bool, windows, false, "Also print the per-window loss, accuracy and configuration of seed 1.");
ABSL_FLAG(bool, log, false, "Print the controller's moves in seed 1 (time, configuration, rate used, queue).");
ABSL_FLAG(bool, json, false, "One JSON object.");

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "eenn-control-sim: %s\n", message.c_str());
  return 1;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

}  // namespace

int main(int argc, char** argv) {
  eenn::common::ParseFlags(argc, argv,
      "eenn-control-sim --configs FILE --baseline_ms MS --baseline_accuracy A [--fixed_ms MS --speed_factor F "
      "--local_fallback] [--trace FILE | --calm_x X --burst_x X --calm_s S --burst_s S --cycles N] [--json]");
  auto set = eenn::common::ReadConfigSetFile(absl::GetFlag(FLAGS_configs));
  if (!set.ok()) return Fail(set.status().ToString());
  const double baseline_ms = absl::GetFlag(FLAGS_baseline_ms);
  const double baseline_accuracy = absl::GetFlag(FLAGS_baseline_accuracy);
  if (!(baseline_ms > 0) || !(baseline_accuracy > 0 && baseline_accuracy <= 1)) {
    return Fail("--baseline_ms must be > 0 and --baseline_accuracy in (0, 1]");
  }
  const int workers = absl::GetFlag(FLAGS_workers);
  if (workers < 1) return Fail("--workers must be >= 1");
  // With the arrivals' work (one worker) the queue drains at 1 / (E[S0] + W) once it is busy.
  const double capacity = workers * 1000.0 / (baseline_ms + absl::GetFlag(FLAGS_arrival_work_ms));

  std::vector<double> trace;
  if (!absl::GetFlag(FLAGS_trace).empty()) {
    auto spec = eenn::common::ParseArrivalSpec("trace:" + absl::GetFlag(FLAGS_trace));
    if (!spec.ok()) return Fail(spec.status().ToString());
    trace = std::move(spec->trace);
  }
  for (double v : {absl::GetFlag(FLAGS_calm_s), absl::GetFlag(FLAGS_calm_x), absl::GetFlag(FLAGS_burst_s),
                   absl::GetFlag(FLAGS_burst_x)}) {
    if (!(v > 0)) return Fail("phase rates and lengths must be > 0");
  }
  auto on_off = [capacity](uint64_t seed) {
    return eenn::common::OnOffTrace(capacity * absl::GetFlag(FLAGS_calm_x), absl::GetFlag(FLAGS_calm_s),
                                    capacity * absl::GetFlag(FLAGS_burst_x), absl::GetFlag(FLAGS_burst_s),
                                    absl::GetFlag(FLAGS_cycles), absl::GetFlag(FLAGS_poisson), seed);
  };

  eenn::common::SimServiceModel model;
  model.fixed_ms = absl::GetFlag(FLAGS_fixed_ms);
  model.speed_factor = absl::GetFlag(FLAGS_speed_factor);
  model.remote_ms = absl::GetFlag(FLAGS_remote_ms);
  model.local_fallback = absl::GetFlag(FLAGS_local_fallback);
  model.noise_cv = absl::GetFlag(FLAGS_noise_cv);
  model.arrival_work_ms = absl::GetFlag(FLAGS_arrival_work_ms);

  eenn::common::SimOptions options;
  auto& c = options.controller;
  c.loss_target = absl::GetFlag(FLAGS_loss_target);
  c.workers = workers;
  c.queue_capacity = absl::GetFlag(FLAGS_queue_capacity);
  c.dwell_s = absl::GetFlag(FLAGS_control_dwell_ms) / 1000.0;
  c.rate_half_life_s = absl::GetFlag(FLAGS_control_rate_half_life_s);
  c.burst_window_s = absl::GetFlag(FLAGS_control_burst_window_ms) / 1000.0;
  c.drain_s = absl::GetFlag(FLAGS_control_drain_ms) / 1000.0;
  c.pressure_margin = absl::GetFlag(FLAGS_control_pressure_margin);
  c.pressure_settle_s = absl::GetFlag(FLAGS_control_pressure_settle_ms) / 1000.0;
  c.high_water = absl::GetFlag(FLAGS_control_high_water);
  c.rate_window_s = absl::GetFlag(FLAGS_control_rate_window_ms) / 1000.0;
  c.rate_z = absl::GetFlag(FLAGS_control_rate_z);
  c.busy_z = absl::GetFlag(FLAGS_control_busy_z);
  c.up_loss_margin = absl::GetFlag(FLAGS_control_up_loss_margin);
  c.up_rate_margin = absl::GetFlag(FLAGS_control_up_rate_margin);
  c.arrival_work = absl::GetFlag(FLAGS_control_arrival_work);
  options.interval_s = absl::GetFlag(FLAGS_control_interval_ms) / 1000.0;
  options.busy_rate = absl::GetFlag(FLAGS_control_busy_rate);

  // The fixed device: one configuration of mean baseline_ms, nothing offloaded.
  const eenn::common::ConfigSet fixed_set =
      eenn::common::FixedDeviceSet(*set, baseline_ms, baseline_accuracy, model);

  nlohmann::json runs = nlohmann::json::array();
  size_t num_arrivals = 0;
  std::vector<double> cut, cost, fixed_loss, adaptive_loss;
  nlohmann::json windows = nlohmann::json::array();
  for (int seed = 1; seed <= std::max(1, absl::GetFlag(FLAGS_seeds)); ++seed) {
    options.seed = seed;
    const std::vector<double> arrivals = trace.empty() ? on_off(seed) : trace;
    num_arrivals = arrivals.size();
    auto fixed_opts = options;
    fixed_opts.static_config = 0;
    auto fixed = eenn::common::SimulateLoadControl(fixed_set, arrivals, model, fixed_opts);
    if (!fixed.ok()) return Fail(fixed.status().ToString());
    auto adaptive = eenn::common::SimulateLoadControl(*set, arrivals, model, options);
    if (!adaptive.ok()) return Fail(adaptive.status().ToString());
    // Loss cut (1 when neither lost anything; 1e9 stands for "to zero").
    const double x = adaptive->loss_ratio > 0 ? fixed->loss_ratio / adaptive->loss_ratio
                                               : (fixed->loss_ratio > 0 ? 1e9 : 1.0);
    const double pts = 100 * (fixed->accuracy - adaptive->accuracy);
    cut.push_back(x);
    cost.push_back(pts);
    fixed_loss.push_back(fixed->loss_ratio);
    adaptive_loss.push_back(adaptive->loss_ratio);
    runs.push_back({{"seed", seed},
                    {"fixed", {{"loss_ratio", fixed->loss_ratio}, {"accuracy", fixed->accuracy}}},
                    {"adaptive",
                     {{"loss_ratio", adaptive->loss_ratio}, {"accuracy", adaptive->accuracy},
                      {"changes", adaptive->changes}}},
                    {"loss_reduction_x", x},
                    {"accuracy_cost_points", pts}});
    if (seed == 1 && absl::GetFlag(FLAGS_log)) {
      for (const auto& m : adaptive->config_changes) {
        std::fprintf(stderr, "%7.3f s: configuration %d (rate used %.1f/s; smoothed %.1f, window %.1f, busy stretch %.1f; "
                     "queue %d)\n", m.t_s, m.config, m.rate_used, m.smoothed_rate, m.window_rate, m.busy_rate, m.queue);
      }
    }
    if (seed == 1) {
      for (size_t w = 0; w < adaptive->windows.size(); ++w) {
        const auto& a = adaptive->windows[w];
        const auto& f = fixed->windows[w];
        windows.push_back({{"start_s", a.start_s},
                           {"arrivals", a.arrivals},
                           {"fixed_loss", f.arrivals ? static_cast<double>(f.refused) / f.arrivals : 0.0},
                           {"adaptive_loss", a.arrivals ? static_cast<double>(a.refused) / a.arrivals : 0.0},
                           {"adaptive_accuracy", a.accuracy},
                           {"mean_config", a.mean_config}});
      }
    }
  }
  nlohmann::json summary = {{"capacity_rps", capacity},
                            {"arrivals", num_arrivals},
                            {"runs", runs},
                            {"median_fixed_loss", Median(fixed_loss)},
                            {"median_adaptive_loss", Median(adaptive_loss)},
                            {"median_loss_reduction_x", Median(cut)},
                            {"median_accuracy_cost_points", Median(cost)}};
  if (absl::GetFlag(FLAGS_windows)) summary["windows_seed1"] = windows;
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", summary.dump().c_str());
    return 0;
  }
  std::printf("capacity %.1f/s (fixed device), %zu arrivals\n", capacity, num_arrivals);
  std::printf("seed | fixed loss | adaptive loss | cut    | accuracy cost (points) | changes\n");
  for (const auto& r : runs) {
    std::printf("%4d | %10.4f | %13.4f | %5.1fx | %22.2f | %d\n", r["seed"].get<int>(),
                r["fixed"]["loss_ratio"].get<double>(), r["adaptive"]["loss_ratio"].get<double>(),
                r["loss_reduction_x"].get<double>(), r["accuracy_cost_points"].get<double>(),
                r["adaptive"]["changes"].get<int>());
  }
  std::printf("median: cut %.1fx at %.2f points\n", Median(cut), Median(cost));
  if (absl::GetFlag(FLAGS_windows)) {
    std::printf("window | arrivals | fixed loss | adaptive loss | adaptive accuracy | mean configuration\n");
    for (const auto& w : windows) {
      std::printf("%6.1f | %8lld | %10.4f | %13.4f | %17.4f | %.1f\n", w["start_s"].get<double>(),
                  static_cast<long long>(w["arrivals"].get<int64_t>()), w["fixed_loss"].get<double>(),
                  w["adaptive_loss"].get<double>(), w["adaptive_accuracy"].get<double>(),
                  w["mean_config"].get<double>());
    }
  }
  return 0;
}
