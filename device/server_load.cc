#include "device/server_load.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace eenn::device {

double ServerLoadGate::ReportedWaitMs(const ServerLoadReport& load) {
  if (load.queue_depth <= 0) return 0;       // an empty queue: no wait
  if (load.service_rate <= 0) return -1;     // a queue at an unknown rate: no estimate
  return 1000.0 * load.queue_depth / load.service_rate;
}

void ServerLoadGate::Blend(double* mean, bool* has, double sample) const {
  *mean = *has ? (1 - options_.smoothing) * *mean + options_.smoothing * sample : sample;
  *has = true;
}

void ServerLoadGate::ObserveOffload(int64_t round_trip_us, int64_t server_queue_us, const ServerLoadReport& load) {
  const double rtt_ms = round_trip_us / 1000.0;
  const double queue_ms = std::clamp(server_queue_us / 1000.0, 0.0, rtt_ms);
  const double wait_sample = std::max(queue_ms, ReportedWaitMs(load));  // measured at least
  absl::MutexLock lock(&mu_);
  Blend(&base_ms_, &has_base_, rtt_ms - queue_ms);
  Blend(&wait_ms_, &has_wait_, wait_sample);
  last_ = load;
}

void ServerLoadGate::ObserveReport(const ServerLoadReport& load) {
  const double wait_sample = ReportedWaitMs(load);
  absl::MutexLock lock(&mu_);
  if (wait_sample >= 0) Blend(&wait_ms_, &has_wait_, wait_sample);
  last_ = load;
}

void ServerLoadGate::ObserveTimeout(absl::Duration waited) {
  const double waited_ms = absl::ToDoubleMilliseconds(waited);
  absl::MutexLock lock(&mu_);
  // The answer would have taken longer than `waited`: at least that much wait.
  const double sample = std::max(0.0, waited_ms - (has_base_ ? base_ms_ : 0.0));
  if (has_wait_) {
    wait_ms_ = std::max(wait_ms_, sample);
  } else {
    wait_ms_ = sample;
    has_wait_ = true;
  }
}

void ServerLoadGate::ObserveOverloaded() {
  absl::MutexLock lock(&mu_);
  last_.queue_depth = std::max(last_.queue_depth, std::max(1, last_.queue_capacity));
  if (last_.queue_capacity <= 0) last_.queue_capacity = last_.queue_depth;
}

void ServerLoadGate::ObserveLocal(int split, int64_t us) {
  if (split < 0 || split > 4096 || us < 0) return;
  absl::MutexLock lock(&mu_);
  if (static_cast<size_t>(split) >= local_ms_.size()) local_ms_.resize(split + 1, 0.0);
  double& m = local_ms_[split];
  const double sample = us / 1000.0;
  m = m > 0 ? (1 - options_.smoothing) * m + options_.smoothing * sample : std::max(sample, 1e-6);
}

double ServerLoadGate::LocalMs(int split) const {
  absl::MutexLock lock(&mu_);
  return split >= 0 && static_cast<size_t>(split) < local_ms_.size() ? local_ms_[split] : 0.0;
}

OffloadVerdict ServerLoadGate::Decide(absl::Duration budget, int split, absl::Time now) {
  OffloadVerdict v;
  absl::MutexLock lock(&mu_);
  v.expected_ms = (has_base_ ? base_ms_ : 0.0) + (has_wait_ ? wait_ms_ : 0.0);
  if (split >= 0 && static_cast<size_t>(split) < local_ms_.size()) v.local_ms = local_ms_[split];
  if (!options_.enabled) return v;
  const double budget_ms = absl::ToDoubleMilliseconds(budget);
  const double allowed_ms = options_.headroom * budget_ms;
  const bool queue_full = last_.queue_capacity > 0 && last_.queue_depth >= options_.max_queue_fill * last_.queue_capacity;
  const bool too_slow = v.expected_ms > allowed_ms;
  // Only the server's load makes the device the quicker: with no queue to
  // speak of the split (the planner's choice) stands.
  bool local_faster = options_.local_factor > 0 && v.local_ms > 0 && has_base_ && has_wait_ &&
                      wait_ms_ >= options_.min_queue_wait_ms && v.expected_ms > options_.local_factor * v.local_ms;
  // While the device is the quicker, one request every explore_interval is
  // offloaded all the same, so that the round trip stays measured (the
  // server's reports give its queue, not its compute or the link).
  //
  // The same holds when the round trip's fixed part alone makes the answer too
  // late: only an offload measures it again (the reports lower the wait, never
  // the base), so without this a base that once rose (a slow batch, a
  // congested link) would keep every request local for good.
  const double wait_ms = has_wait_ ? wait_ms_ : 0.0;
  const bool explore_due = now - last_offload_ >= options_.explore_interval;
  const bool slow_base = too_slow && has_base_ && wait_ms < allowed_ms;
  if (!queue_full && explore_due && ((local_faster && !too_slow) || slow_base)) {
    local_faster = false;
    v.explore = true;
  }
  if (!queue_full && (!too_slow || v.explore) && !local_faster) {
    declining_ = false;
    last_offload_ = now;
    return v;
  }
  v.started_declining = !declining_;
  declining_ = true;
  ++declined_;
  v.offload = false;
  if (queue_full) {
    v.reason = absl::StrFormat("server busy: its queue holds %d of %d requests", last_.queue_depth,
                               last_.queue_capacity);
  } else if (too_slow) {
    v.reason = absl::StrFormat("server busy: expected answer in %.1f ms, budget %.1f ms (x%.2f headroom)",
                               v.expected_ms, budget_ms, options_.headroom);
  } else {
    ++declined_local_;
    v.reason = absl::StrFormat("server busy: expected answer in %.1f ms, finishing here takes %.1f ms",
                               v.expected_ms, v.local_ms);
  }
  return v;
}

bool ServerLoadGate::declining() const {
  absl::MutexLock lock(&mu_);
  return declining_;
}

ServerLoadState ServerLoadGate::state() const {
  absl::MutexLock lock(&mu_);
  ServerLoadState s;
  s.observed = has_base_ || has_wait_;
  s.base_ms = has_base_ ? base_ms_ : 0;
  s.wait_ms = has_wait_ ? wait_ms_ : 0;
  s.expected_ms = s.base_ms + s.wait_ms;
  s.queue_depth = last_.queue_depth;
  s.queue_capacity = last_.queue_capacity;
  s.service_rate = last_.service_rate;
  s.declined = declined_;
  s.declined_local_faster = declined_local_;
  return s;
}

}  // namespace eenn::device
