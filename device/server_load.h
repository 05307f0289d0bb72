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
// budget the request would get or when the server's queue is nearly full.
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
//
// Thread-safety: all methods may be called from any thread.
#ifndef EENN_DEVICE_SERVER_LOAD_H_
#define EENN_DEVICE_SERVER_LOAD_H_

#include <cstdint>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace eenn::device {

struct ServerLoadOptions {
  bool enabled = true;             // false: offload whenever the server is up (load-blind)
  double headroom = 0.8;           // offload when expected round trip <= headroom x budget
  double max_queue_fill = 0.9;     // ... and the server's queue is below this share of its capacity
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

  // Whether to offload a request that may wait `budget` for the answer.
  OffloadVerdict Decide(absl::Duration budget);

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
};

}  // namespace eenn::device

#endif  // EENN_DEVICE_SERVER_LOAD_H_
