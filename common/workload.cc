#include "common/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace eenn::common {
namespace {

absl::StatusOr<double> ParseNumber(absl::string_view text, absl::string_view what) {
  double v = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(text), &v) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", text, "' is not a number"));
  }
  return v;
}

// Exponential variate with the given rate from a uniform in [0, 1).
double Exponential(std::mt19937_64& rng, double rate) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  return -std::log1p(-u(rng)) / rate;
}

int64_t NearestRankIndex(size_t n, double q) {
  const auto rank = static_cast<int64_t>(std::ceil(q * static_cast<double>(n)));
  return std::clamp<int64_t>(rank - 1, 0, static_cast<int64_t>(n) - 1);
}

struct Accumulator {
  WindowStats w;
  std::vector<double> latencies;

  void Add(const RequestRecord& r, double deadline_ms) {
    ++w.arrivals;
    switch (r.outcome) {
      case RequestOutcome::kAnswered:
        ++w.replies;
        latencies.push_back(r.latency_ms);
        if (r.latency_ms > deadline_ms) {
          ++w.missed;
        } else {
          ++w.answered;
          if (r.labelled) {
            ++w.labelled;
            w.correct += r.correct;
          }
        }
        break;
      case RequestOutcome::kRejected: ++w.rejected; break;
      case RequestOutcome::kDeadline: ++w.missed; break;
      case RequestOutcome::kFailed: ++w.failed; break;
    }
  }

  WindowStats Finish() {
    if (!latencies.empty()) {
      std::sort(latencies.begin(), latencies.end());
      w.p50_ms = latencies[NearestRankIndex(latencies.size(), 0.50)];
      w.p99_ms = latencies[NearestRankIndex(latencies.size(), 0.99)];
    }
    return w;
  }
};

}  // namespace

double ArrivalSpec::MeanRate() const {
  switch (kind) {
    case Kind::kPoisson: return rate;
    case Kind::kOnOff: return (rate_on * on_s + rate_off * off_s) / (on_s + off_s);
    case Kind::kTrace:
      return trace.empty() || trace.back() <= 0 ? 0.0 : static_cast<double>(trace.size()) / trace.back();
  }
  return 0;
}

std::string ArrivalSpec::ToString() const {
  switch (kind) {
    case Kind::kPoisson: return absl::StrCat("poisson:", rate);
    case Kind::kOnOff: return absl::StrCat("onoff:", rate_on, ",", rate_off, ",", on_s, ",", off_s);
    case Kind::kTrace: return absl::StrCat("trace:", source);
  }
  return "";
}

absl::StatusOr<std::vector<double>> ParseArrivalTrace(absl::string_view text, absl::string_view name) {
  std::vector<double> times;
  int column = 0;  // which comma-separated column holds the times
  bool header_seen = false;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> cells = absl::StrSplit(line, ',');
    auto error = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(name, " line ", line_no, ": ", why));
    };
    if (!header_seen && times.empty()) {
      header_seen = true;
      double ignored;
      if (!absl::SimpleAtod(absl::StripAsciiWhitespace(cells[0]), &ignored)) {
        // A header: find the time column.
        column = -1;
        for (size_t i = 0; i < cells.size(); ++i) {
          const std::string cell = absl::AsciiStrToLower(absl::StripAsciiWhitespace(cells[i]));
          if (cell == "t" || cell == "time") column = static_cast<int>(i);
        }
        if (column < 0) return error(absl::StrCat("header '", line, "' has no column named t or time"));
        continue;
      }
    }
    if (static_cast<int>(cells.size()) <= column) {
      return error(absl::StrCat("'", line, "' has no column ", column + 1));
    }
    double t = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(cells[column]), &t) || !std::isfinite(t)) {
      return error(absl::StrCat("'", cells[column], "' is not a time in seconds"));
    }
    if (t < 0) return error(absl::StrCat("arrival time ", t, " is negative"));
    if (!times.empty() && t < times.back()) {
      return error(absl::StrCat("arrival time ", t, " is before the previous one (", times.back(),
                                "); times must not decrease"));
    }
    times.push_back(t);
  }
  if (times.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no arrival times"));
  return times;
}

absl::StatusOr<ArrivalSpec> ParseArrivalSpec(absl::string_view spec) {
  ArrivalSpec out;
  const size_t colon = spec.find(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "arrivals '", spec, "': expected poisson:RATE, onoff:RATE_ON,RATE_OFF,ON_S,OFF_S or trace:FILE.csv"));
  }
  const absl::string_view kind = spec.substr(0, colon);
  const absl::string_view args = spec.substr(colon + 1);
  if (kind == "poisson") {
    out.kind = ArrivalSpec::Kind::kPoisson;
    auto r = ParseNumber(args, "poisson rate");
    if (!r.ok()) return r.status();
    if (*r <= 0) return absl::InvalidArgumentError(absl::StrCat("poisson rate ", *r, " must be > 0"));
    out.rate = *r;
    return out;
  }
  if (kind == "onoff") {
    out.kind = ArrivalSpec::Kind::kOnOff;
    std::vector<absl::string_view> parts = absl::StrSplit(args, ',');
    if (parts.size() != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("onoff '", args, "': expected RATE_ON,RATE_OFF,ON_S,OFF_S (four numbers)"));
    }
    const char* names[] = {"onoff RATE_ON", "onoff RATE_OFF", "onoff ON_S", "onoff OFF_S"};
    double v[4];
    for (int i = 0; i < 4; ++i) {
      auto r = ParseNumber(parts[i], names[i]);
      if (!r.ok()) return r.status();
      if (*r < 0) return absl::InvalidArgumentError(absl::StrCat(names[i], " ", *r, " must be >= 0"));
      v[i] = *r;
    }
    if (v[2] + v[3] <= 0) return absl::InvalidArgumentError("onoff: ON_S + OFF_S must be > 0");
    if (v[0] * v[2] + v[1] * v[3] <= 0) return absl::InvalidArgumentError("onoff: no arrivals in either phase");
    out.rate_on = v[0];
    out.rate_off = v[1];
    out.on_s = v[2];
    out.off_s = v[3];
    return out;
  }
  if (kind == "trace") {
    out.kind = ArrivalSpec::Kind::kTrace;
    out.source = std::string(args);
    std::ifstream in(out.source, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read arrival trace '", out.source, "'"));
    std::stringstream ss;
    ss << in.rdbuf();
    auto t = ParseArrivalTrace(ss.str(), out.source);
    if (!t.ok()) return t.status();
    out.trace = std::move(*t);
    return out;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("arrivals '", spec, "': unknown process '", kind, "' (poisson, onoff or trace)"));
}

std::vector<double> GenerateArrivals(const ArrivalSpec& spec, double duration_s, uint64_t seed) {
  std::vector<double> out;
  if (spec.kind == ArrivalSpec::Kind::kTrace) {
    for (double t : spec.trace) {
      if (duration_s > 0 && t >= duration_s) break;
      out.push_back(t);
    }
    return out;
  }
  std::mt19937_64 rng(seed);
  if (spec.kind == ArrivalSpec::Kind::kPoisson) {
    for (double t = Exponential(rng, spec.rate); t < duration_s; t += Exponential(rng, spec.rate)) out.push_back(t);
    return out;
  }
  // On/off: a Poisson process whose rate is piecewise constant. By the memoryless
  // property, an inter-arrival drawn in one phase that crosses into the next can
  // be discarded and redrawn from the phase boundary at the new rate.
  const double period = spec.on_s + spec.off_s;
  double t = 0;
  while (t < duration_s) {
    const double in_period = std::fmod(t, period);
    const bool on = in_period < spec.on_s;
    const double rate = on ? spec.rate_on : spec.rate_off;
    const double phase_end = t - in_period + (on ? spec.on_s : period);
    const double next = rate > 0 ? t + Exponential(rng, rate) : phase_end;
    if (next >= phase_end) {
      t = phase_end;
      continue;
    }
    t = next;
    if (t < duration_s) out.push_back(t);
  }
  return out;
}

double WindowStats::LossRatio() const {
  return arrivals > 0 ? static_cast<double>(rejected + missed) / static_cast<double>(arrivals) : 0.0;
}

double WindowStats::Accuracy() const {
  return labelled > 0 ? static_cast<double>(correct) / static_cast<double>(labelled) : -1.0;
}

std::vector<WindowStats> AggregateWindows(const std::vector<RequestRecord>& records, double window_s,
                                          double duration_s, double deadline_ms) {
  if (window_s <= 0) return {};
  double end = duration_s;
  size_t n = 0;
  if (end > 0) {
    n = static_cast<size_t>(std::ceil(end / window_s - 1e-9));
  } else {
    if (records.empty()) return {};
    double last = 0;
    for (const auto& r : records) last = std::max(last, r.arrival_s);
    n = static_cast<size_t>(std::floor(last / window_s)) + 1;  // whole windows up to the last arrival
    end = static_cast<double>(n) * window_s;
  }
  std::vector<Accumulator> acc(std::max<size_t>(n, 1));
  for (size_t i = 0; i < acc.size(); ++i) {
    acc[i].w.start_s = static_cast<double>(i) * window_s;
    acc[i].w.end_s = std::min(end, static_cast<double>(i + 1) * window_s);
  }
  for (const auto& r : records) {
    const double k = std::floor(std::max(0.0, r.arrival_s) / window_s);
    const size_t i = std::min(acc.size() - 1, static_cast<size_t>(k));
    acc[i].Add(r, deadline_ms);
  }
  std::vector<WindowStats> out;
  out.reserve(acc.size());
  for (auto& a : acc) out.push_back(a.Finish());
  return out;
}

WindowStats AggregateAll(const std::vector<RequestRecord>& records, double duration_s, double deadline_ms) {
  Accumulator a;
  a.w.start_s = 0;
  a.w.end_s = duration_s;
  for (const auto& r : records) a.Add(r, deadline_ms);
  return a.Finish();
}

std::string WindowsCsv(const std::vector<WindowStats>& windows) {
  std::string out =
      "start_s,end_s,arrivals,answered,rejected,missed,failed,loss_ratio,accuracy,labelled,p50_ms,p99_ms\n";
  for (const auto& w : windows) {
    absl::StrAppend(&out, absl::StrFormat("%.6g,%.6g,%d,%d,%d,%d,%d,%.6f,", w.start_s, w.end_s, w.arrivals,
                                          w.answered, w.rejected, w.missed, w.failed, w.LossRatio()));
    if (w.labelled > 0) absl::StrAppend(&out, absl::StrFormat("%.6f", w.Accuracy()));
    absl::StrAppend(&out, absl::StrFormat(",%d,%.4f,%.4f\n", w.labelled, w.p50_ms, w.p99_ms));
  }
  return out;
}

}  // namespace eenn::common
