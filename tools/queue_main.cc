// eenn-queue: the loss ratio and delays that the finite-queue model
// (common/queueing.h) predicts for an eenn-device with --workers and
// --queue_capacity under Poisson arrivals, from the device's measured
// service-time mean and second moment (eenn-client reports both as
// device_service_ms.mean and .m2), or from regimes of a drifting service
// speed (--service_regimes_ms: the window means eenn-client reports as
// answer_gap_ms.regimes_ms, with --service_scv their SCV within a window).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "common/queueing.h"

ABSL_FLAG(std::string, rate, "", "Arrival rates (requests per second), comma-separated.");
ABSL_FLAG(double, service_ms, 0, "Mean service time of one request (ms).");
ABSL_FLAG(double, service_m2, -1, "Second moment of the service time (ms^2); or give --service_scv.");
ABSL_FLAG(double, service_scv, 1, "Squared coefficient of variation of the service time (used without --service_m2).");
ABSL_FLAG(std::string, service_regimes_ms, "",
          "Service-speed regimes: mean service times (ms), comma-separated, each for an equal share of the time, "
          "each with --service_scv; the loss is averaged over them (common/queueing.h, SolveSlowlyVarying). "
          "Replaces --service_ms and --service_m2.");
ABSL_FLAG(std::string, service_samples, "",
          "A file of observed service times (ms), one per line: the queue model uses their distribution itself "
          "(common/queueing.h). Replaces --service_ms, --service_m2 and --service_scv.");
ABSL_FLAG(double, arrival_work_ms, 0,
          "Work each arrival adds to the service in progress (ms), accepted or refused: the device's own handling "
          "of a request when it shares a core with the worker (eenn-device's counters give it: worker busy less CPU "
          "seconds over arrivals while busy; tools/bench/queue_validation.py reads them). The service times above "
          "are then without it. One worker only.");
ABSL_FLAG(int, workers, 2, "Requests processed at once (eenn-device --workers).");
ABSL_FLAG(int, queue_capacity, 64, "Requests waiting (eenn-device --queue_capacity).");
ABSL_FLAG(bool, json, false, "One JSON object per rate, one a line.");

int main(int argc, char** argv) {
  eenn::common::ParseFlags(argc, argv,
      "eenn-queue --rate R1,R2,... (--service_ms MEAN [--service_m2 MS2 | --service_scv SCV] | --service_regimes_ms "
      "M1,M2,... [--service_scv SCV] | --service_samples FILE) [--arrival_work_ms W] [--workers C] "
      "[--queue_capacity Q] [--json]");
  double mean_ms = absl::GetFlag(FLAGS_service_ms);
  double scv = absl::GetFlag(FLAGS_service_scv);
  if (absl::GetFlag(FLAGS_service_m2) >= 0 && mean_ms > 0) {
    scv = std::max(0.0, absl::GetFlag(FLAGS_service_m2) / (mean_ms * mean_ms) - 1);
  }
  auto numbers = [](const char* flag, const std::string& text, std::vector<double>* out) {
    for (absl::string_view r : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
      double v = 0;
      if (!absl::SimpleAtod(r, &v)) {
        std::fprintf(stderr, "eenn-queue: --%s: '%s' is not a number\n", flag, std::string(r).c_str());
        return false;
      }
      out->push_back(v);
    }
    return true;
  };
  std::vector<double> rates, regime_ms;
  if (!numbers("rate", absl::GetFlag(FLAGS_rate), &rates)) return 1;
  if (!numbers("service_regimes_ms", absl::GetFlag(FLAGS_service_regimes_ms), &regime_ms)) return 1;
  std::vector<eenn::common::ServiceRegime> regimes;
  for (double ms : regime_ms) {
    eenn::common::ServiceRegime g;
    g.service_mean_s = ms / 1000;
    g.service_scv = absl::GetFlag(FLAGS_service_scv);
    regimes.push_back(g);
  }
  std::vector<double> samples_s;
  if (!absl::GetFlag(FLAGS_service_samples).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_service_samples));
    if (!in) {
      std::fprintf(stderr, "eenn-queue: cannot read %s\n", absl::GetFlag(FLAGS_service_samples).c_str());
      return 1;
    }
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      const absl::string_view t = absl::StripAsciiWhitespace(line);
      if (t.empty() || t[0] == '#') continue;
      double ms = 0;
      if (!absl::SimpleAtod(t, &ms) || !(ms >= 0)) {
        std::fprintf(stderr, "eenn-queue: %s line %d: '%s' is not a service time in ms\n",
                     absl::GetFlag(FLAGS_service_samples).c_str(), n, std::string(t).c_str());
        return 1;
      }
      samples_s.push_back(ms / 1000);
    }
    if (samples_s.empty()) {
      std::fprintf(stderr, "eenn-queue: %s holds no service times\n", absl::GetFlag(FLAGS_service_samples).c_str());
      return 1;
    }
    const eenn::common::ServiceMoments mo = eenn::common::ComputeServiceMoments(samples_s);
    mean_ms = mo.mean * 1000;
    scv = mo.scv;
  }
  if (!regimes.empty()) {
    mean_ms = 0;
    for (double ms : regime_ms) mean_ms += ms / static_cast<double>(regime_ms.size());
    scv = absl::GetFlag(FLAGS_service_scv);
  }
  if (rates.empty()) {
    std::fprintf(stderr, "eenn-queue: give --rate\n");
    return 1;
  }
  if (!absl::GetFlag(FLAGS_json)) {
    std::printf("# service mean %.4f ms, SCV %.4f, arrival work %.4f ms, %d workers, %d waiting (K = %d)\n", mean_ms,
                scv, absl::GetFlag(FLAGS_arrival_work_ms),
                absl::GetFlag(FLAGS_workers), absl::GetFlag(FLAGS_queue_capacity),
                absl::GetFlag(FLAGS_workers) + absl::GetFlag(FLAGS_queue_capacity));
    std::printf("%10s %8s %10s %10s %12s %12s\n", "rate", "rho", "loss", "L", "sojourn_ms", "wait_ms");
  }
  eenn::common::QueueModel m;
  m.service_mean_s = mean_ms / 1000;
  m.service_scv = scv;
  m.servers = absl::GetFlag(FLAGS_workers);
  m.capacity = absl::GetFlag(FLAGS_queue_capacity) + absl::GetFlag(FLAGS_workers);
  m.service_samples_s = std::move(samples_s);
  m.arrival_work_s = absl::GetFlag(FLAGS_arrival_work_ms) / 1000;
  for (double rate : rates) {
    m.arrival_rate = rate;
    auto r = regimes.empty() ? eenn::common::SolveQueue(m) : eenn::common::SolveSlowlyVarying(m, regimes);
    if (!r.ok()) {
      std::fprintf(stderr, "eenn-queue: %s\n", r.status().ToString().c_str());
      return 1;
    }
    // Offered load, with the mean service that the arrivals' work stretches.
    const double mu = rate * m.arrival_work_s;
    const double rho = mu < 1 ? rate * m.service_mean_s / (1 - mu) / m.servers : INFINITY;
    if (absl::GetFlag(FLAGS_json)) {
      nlohmann::json j = {{"rate", rate},
                          {"rho", rho},
                          {"service_ms", mean_ms},
                          {"service_scv", scv},
                          {"arrival_work_ms", m.arrival_work_s * 1000},
                          {"workers", m.servers},
                          {"capacity", m.capacity},
                          {"loss_probability", r->loss_probability},
                          {"mean_in_system", r->mean_in_system},
                          {"throughput", r->throughput},
                          {"mean_sojourn_ms", r->mean_sojourn_s * 1000},
                          {"mean_wait_ms", r->mean_wait_s * 1000},
                          {"utilization", r->utilization},
                          {"method", r->method}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%10.2f %8.3f %10.5f %10.3f %12.3f %12.3f\n", rate, rho, r->loss_probability, r->mean_in_system,
                  r->mean_sojourn_s * 1000, r->mean_wait_s * 1000);
    }
  }
  return 0;
}
