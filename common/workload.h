// Open-loop workloads for driving an eenn-device: arrival processes that
// generate request arrival times (Poisson, on/off, a replayed trace) and the
// per-window aggregation of what became of each request. Torch-free; used by
// eenn-client's --arrivals mode.
//
// Arrival specifications (eenn-client --arrivals):
//   poisson:RATE                      homogeneous Poisson process, RATE arrivals/s
//   onoff:RATE_ON,RATE_OFF,ON_S,OFF_S Poisson at RATE_ON for ON_S seconds, then at
//                                     RATE_OFF for OFF_S seconds, repeated (starts on)
//   trace:FILE.csv                    replay of arrival times from a CSV file
//
// Trace files: one arrival per line, in seconds from the start of the run
// (non-negative, non-decreasing). Empty lines and lines starting with '#' are
// skipped. The file is either a single column of numbers, or has a header line
// whose columns are named; then the column named `t` or `time` holds the
// arrival times and other columns are ignored. A line that cannot be read is
// an error naming the file and the line number.
#ifndef EENN_COMMON_WORKLOAD_H_
#define EENN_COMMON_WORKLOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace eenn::common {

struct ArrivalSpec {
  enum class Kind { kPoisson, kOnOff, kTrace };
  Kind kind = Kind::kPoisson;
  double rate = 0;                   // poisson: arrivals per second
  double rate_on = 0, rate_off = 0;  // onoff: arrivals per second in each phase
  double on_s = 0, off_s = 0;        // onoff: phase lengths in seconds
  std::vector<double> trace;         // trace: arrival times in seconds
  std::string source;                // trace: the file it came from

  // Long-run mean arrival rate (arrivals per second); for a trace, the number
  // of arrivals over the last arrival time.
  double MeanRate() const;
  // The specification back as text (for reports).
  std::string ToString() const;
};

// Parses an --arrivals value (see the top of this file); a trace file is read.
absl::StatusOr<ArrivalSpec> ParseArrivalSpec(absl::string_view spec);

// Parses trace text; `name` is used in error messages ("NAME line N: ...").
absl::StatusOr<std::vector<double>> ParseArrivalTrace(absl::string_view text, absl::string_view name);

// Arrival times in [0, duration_s), ascending, deterministic for a given seed.
// For a trace, the times below duration_s (all of them when duration_s <= 0).
std::vector<double> GenerateArrivals(const ArrivalSpec& spec, double duration_s, uint64_t seed);

// What became of one request, as the load generator saw it.
enum class RequestOutcome {
  kAnswered,      // an OK reply (late when latency_ms exceeds the deadline)
  kRejected,      // RESOURCE_EXHAUSTED: refused by a full queue
  kDeadline,      // DEADLINE_EXCEEDED, or no answer at all
  kFailed,        // any other error
};

struct RequestRecord {
  double arrival_s = 0;  // intended arrival time, seconds from the start of the run
  RequestOutcome outcome = RequestOutcome::kAnswered;
  double latency_ms = 0;  // from the intended arrival time to the reply (answered only)
  bool labelled = false;  // the ground truth is known
  bool correct = false;   // ... and the answer matched it
};

// Aggregate of the requests that arrived in [start_s, end_s).
struct WindowStats {
  double start_s = 0, end_s = 0;
  int64_t arrivals = 0;
  int64_t answered = 0;  // OK replies within the deadline
  int64_t rejected = 0;  // RESOURCE_EXHAUSTED
  int64_t missed = 0;    // DEADLINE_EXCEEDED, no answer, or an OK reply after the deadline
  int64_t failed = 0;    // other errors
  int64_t labelled = 0, correct = 0;  // over answered requests
  double p50_ms = 0, p99_ms = 0;      // latency of every OK reply (late ones included), nearest rank
  int64_t replies = 0;                // OK replies (answered + late)

  // (rejected + missed) / arrivals; 0 with no arrivals.
  double LossRatio() const;
  // correct / labelled; negative when nothing answered was labelled.
  double Accuracy() const;
};

// Windows of `window_s` seconds by arrival time covering [0, duration_s) (the
// last one may be shorter; duration_s <= 0: whole windows up to the one
// holding the last arrival). An OK
// reply later than deadline_ms counts as missed. Requests arriving at or after
// duration_s fall in the last window.
std::vector<WindowStats> AggregateWindows(const std::vector<RequestRecord>& records, double window_s,
                                          double duration_s, double deadline_ms);

// One aggregate over every record ([0, duration_s)).
WindowStats AggregateAll(const std::vector<RequestRecord>& records, double duration_s, double deadline_ms);

// The windows as CSV with a header line (start_s,end_s,arrivals,...).
std::string WindowsCsv(const std::vector<WindowStats>& windows);

}  // namespace eenn::common

#endif  // EENN_COMMON_WORKLOAD_H_
