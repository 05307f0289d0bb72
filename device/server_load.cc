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

OffloadVerdict ServerLoadGate::Decide(absl::Duration budget) {
  OffloadVerdict v;
  absl::MutexLock lock(&mu_);
  v.expected_ms = (has_base_ ? base_ms_ : 0.0) + (has_wait_ ? wait_ms_ : 0.0);
  if (!options_.enabled) return v;
  const double budget_ms = absl::ToDoubleMilliseconds(budget);
  const double allowed_ms = options_.headroom * budget_ms;
  const bool queue_full = last_.queue_capacity > 0 && last_.queue_depth >= options_.max_queue_fill * last_.queue_capacity;
  const bool too_slow = v.expected_ms > allowed_ms;
  if (!queue_full && !too_slow) {
    declining_ = false;
    return v;
  }
  v.started_declining = !declining_;
  declining_ = true;
  ++declined_;
  v.offload = false;
  v.reason = queue_full ? absl::StrFormat("server busy: its queue holds %d of %d requests", last_.queue_depth,
                                          last_.queue_capacity)
                        : absl::StrFormat("server busy: expected answer in %.1f ms, budget %.1f ms (x%.2f headroom)",
                                          v.expected_ms, budget_ms, options_.headroom);
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
  return s;
}

}  // namespace eenn::device
