// Server-aware offloading: the device's view of how long the offload server
// will take to answer, and the decision to offload a request or finish it
// locally when the server is too busy to answer within the request's budget.
//
// Several devices share one server tier. Load-blind, each device keeps
// offloading into a saturated server: its requests wait in the server's queue
// until their own timeouts, the device's workers are held for that time, and
// then the device finishes them locally anyway, late. The gate predicts the
// round trip from what the server reports (its queue depth, queue capacity and
// recent service rate, in every ResumeReply and in GetModelInfo) and from what
// the device measured (round trips and the server's queue wait in recent
// replies), and declines to offload when the prediction does not fit the
// budget the request would get, when the server's queue is nearly full, or
// when the server's queue makes its answer come later than the device would
// finish the request itself.
//
// That last comparison is what keeps a shared server from becoming every
// device's queue: an offload holds the device's worker for the whole round
// trip, so a device that offloads while the server's queue is long serves
// fewer requests per second than one that finishes them itself, and the
// requests behind it wait. With it, each device sends the server only what
// the server answers sooner than the device would, the server's queue stays
// near the devices' own remainder time, and the rest is finished locally
// at once. While the device is the quicker, one request per
// `explore_interval` is offloaded anyway, so the round trip (link and
// server compute, which the server's load reports do not show) stays
// measured and offloading resumes when it pays again; so is one request
// per interval while that fixed part of the round trip alone makes the
// answer too late for the budget.
//
// While it declines, no request waits to find out whether the server has
// recovered: the device's monitor asks for the server's load (GetModelInfo)
// every refresh interval, and the estimate follows the reports.
//
// Estimates (each an exponentially weighted mean, weight `smoothing` for the
// newest observation):
//   base  = round trip minus the server's queue wait (network, codec, compute)
//   wait  = the server's queue wait: per reply max(its measured queue wait,
//           reported queue depth / reported service rate); a GetModelInfo
//           report contributes depth / rate (0 for an empty queue, nothing
//           for a queue whose service rate is not known yet); an offload that
//           ran out of time raises it to at least the time it waited
//   expected round trip = base + wait
//   local = time the device took to finish a request itself from the split
//           (the layers after it), per split: measured on every local
//           finish, seeded by a warm-up measurement; unknown for a split
//           never finished locally (no comparison then)
//
// Thread-safety: all methods may be called from any thread.
#ifndef EENN_DEVICE_SERVER_LOAD_H_
#define EENN_DEVICE_SERVER_LOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace eenn::device {

struct ServerLoadOptions {
  bool enabled = true;             // false: offload whenever the server is up (load-blind)
  double headroom = 0.8;           // offload when expected round trip <= headroom x budget
  double max_queue_fill = 0.9;     // ... and the server's queue is below this share of its capacity
  // ... and the expected round trip <= local_factor x the expected local
  // finish (0: no comparison; offload whenever the budget allows).
  double local_factor = 1.0;
  // ... compared only while the server's expected queue wait is at least
  // this: an idle server is offloaded to whatever the local estimate says
  // (whether a split pays at all is the planner's question).
  double min_queue_wait_ms = 1.0;
  // While finishing locally is the quicker, one request per interval is
  // offloaded anyway to keep the round trip measured.
  absl::Duration explore_interval = absl::Milliseconds(250);
  double smoothing = 0.3;          // weight of the newest observation in the estimates
  // While declining, how often the device's monitor asks for the server's load.
  absl::Duration refresh_interval = absl::Milliseconds(50);
};

// What a server says about its load (proto ServerLoad).
struct ServerLoadReport {
  int queue_depth = 0;
  int queue_capacity = 0;
  double service_rate = 0;  // samples per second, 0 when unknown
};

struct OffloadVerdict {
  bool offload = true;
  bool started_declining = false;  // this decision is the first decline after offloading
  double expected_ms = 0;      // expected round trip (0 until the first observation)
  double local_ms = 0;         // expected local finish from the split (0: unknown)
  bool explore = false;        // offloaded to keep the round trip measured (local is the quicker, or the
                               // round trip's fixed part alone is over the budget)
  std::string reason;          // why not, when !offload
};

struct ServerLoadState {
  bool observed = false;       // at least one report or offload seen
  double expected_ms = 0;      // base + wait
  double wait_ms = 0;
  double base_ms = 0;
  int queue_depth = 0;         // last reported
  int queue_capacity = 0;
  double service_rate = 0;
  int64_t declined = 0;        // requests finished locally because of the server's load
  int64_t declined_local_faster = 0;  // ... of them because the device was expected to be quicker
};

class ServerLoadGate {
 public:
  explicit ServerLoadGate(const ServerLoadOptions& options) : options_(options) {}

  // A successful offload: its round trip, the server's queue wait for it, and
  // the load the reply reported.
  void ObserveOffload(int64_t round_trip_us, int64_t server_queue_us, const ServerLoadReport& load);
  // The load a GetModelInfo answer reported.
  void ObserveReport(const ServerLoadReport& load);
  // An offload that ran out of time (DEADLINE_EXCEEDED) after `waited`.
  void ObserveTimeout(absl::Duration waited);
  // An offload the server refused because its queue was full
  // (RESOURCE_EXHAUSTED): counts as a full queue until the next report.
  void ObserveOverloaded();

  // A request the device finished itself from layer `split` in `us`.
  void ObserveLocal(int split, int64_t us);

  // Whether to offload a request split at `split` (-1: no local comparison)
  // that may wait `budget` for the answer.
  OffloadVerdict Decide(absl::Duration budget, int split = -1, absl::Time now = absl::Now());
  // The expected local finish from `split` (0 when unknown).
  double LocalMs(int split) const;

  // True while the last decision declined (the monitor refreshes the load then).
  bool declining() const;
  ServerLoadState state() const;

 private:
  // An exponentially weighted mean; the first sample sets it.
  void Blend(double* mean, bool* has, double sample) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static double ReportedWaitMs(const ServerLoadReport& load);

  const ServerLoadOptions options_;
  mutable absl::Mutex mu_;
  bool has_base_ ABSL_GUARDED_BY(mu_) = false;
  bool has_wait_ ABSL_GUARDED_BY(mu_) = false;
  double base_ms_ ABSL_GUARDED_BY(mu_) = 0;
  double wait_ms_ ABSL_GUARDED_BY(mu_) = 0;
  ServerLoadReport last_ ABSL_GUARDED_BY(mu_);
  bool declining_ ABSL_GUARDED_BY(mu_) = false;
  int64_t declined_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t declined_local_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_offload_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::vector<double> local_ms_ ABSL_GUARDED_BY(mu_);  // per split; 0: not measured
};

}  // namespace eenn::device

#endif  // EENN_DEVICE_SERVER_LOAD_H_
