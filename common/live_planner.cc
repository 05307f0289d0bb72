#include "common/live_planner.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace eenn::common {

void TimeEwma::Add(double value, double now_s) {
  if (!has_value_) {
    value_ = value;
    has_value_ = true;
  } else {
    const double dt = std::max(0.0, now_s - last_s_);
    // Weight of the old value after dt: 0.5^(dt / half_life). Samples at the
    // same instant still move the average a little, so a burst is not ignored.
    const double keep = std::min(0.9, std::pow(0.5, dt / std::max(half_life_s_, 1e-9)));
    value_ = keep * value_ + (1 - keep) * value;
  }
  last_s_ = std::max(last_s_, now_s);
}

LinkEstimator::LinkEstimator(const LinkEstimatorOptions& options)
    : options_(options),
      rtt_ms_(options.half_life_s),
      log_ms_per_byte_(options.half_life_s),
      speed_(options.half_life_s),
      queue_ms_(options.half_life_s) {}

void LinkEstimator::AddRoundTrip(double bytes, double round_trip_ms, double server_ms, double now_s) {
  if (!(round_trip_ms >= 0) || !(server_ms >= 0) || !(bytes >= 0)) return;
  ++round_trips_;
  const double network_ms = std::max(0.0, round_trip_ms - server_ms);
  if (bytes <= 0) {
    rtt_ms_.Add(network_ms, now_s);
    return;
  }
  const double rtt = rtt_ms_.has_value() ? rtt_ms_.value() : options_.initial.rtt_ms;
  const double transfer_ms = network_ms - rtt;
  if (transfer_ms < options_.min_transfer_ms) {
    // Too fast to separate from the RTT: the link is at least this fast, and
    // the round trip itself is an RTT sample.
    rtt_ms_.Add(network_ms, now_s);
    log_ms_per_byte_.Add(std::log(options_.min_transfer_ms / bytes), now_s);
    return;
  }
  log_ms_per_byte_.Add(std::log(transfer_ms / bytes), now_s);
}

void LinkEstimator::AddServerCompute(double measured_ms, double profiled_ms, double now_s) {
  if (!(measured_ms > 0) || !(profiled_ms > 0)) return;
  speed_.Add(measured_ms / profiled_ms, now_s);
}

void LinkEstimator::AddServerQueue(double queue_ms, double now_s) {
  if (!(queue_ms >= 0)) return;
  queue_ms_.Add(queue_ms, now_s);
}

LinkEstimate LinkEstimator::link() const {
  LinkEstimate l = options_.initial;
  if (rtt_ms_.has_value()) l.rtt_ms = rtt_ms_.value();
  if (log_ms_per_byte_.has_value()) {
    // 8 bits per byte, ms -> s, bit -> Mbit.
    l.bandwidth_mbps = 0.008 / std::exp(log_ms_per_byte_.value());
  }
  return l;
}

double LinkEstimator::server_speed_factor() const { return speed_.has_value() ? speed_.value() : 1.0; }

double LinkEstimator::server_queue_ms() const { return queue_ms_.has_value() ? queue_ms_.value() : 0.0; }

absl::StatusOr<SplitController> SplitController::Create(Profile device, Profile server,
                                                        const SplitControllerOptions& options) {
  if (!(options.min_gain_ms >= 0) || !(options.min_gain_ratio >= 0) || !(options.min_dwell_s >= 0)) {
    return absl::InvalidArgumentError("split controller: gains and dwell time must be >= 0");
  }
  // Validates that the two profiles and the options fit together.
  EENN_RETURN_IF_ERROR(PlanSplits(device, server, LinkEstimate{}, options.plan).status());
  return SplitController(std::move(device), std::move(server), options);
}

absl::StatusOr<Plan> SplitController::PlanFor(const LinkEstimator& estimator,
                                              std::optional<double> bandwidth_mbps,
                                              std::optional<double> rtt_ms) const {
  LinkEstimate link = estimator.link();
  if (bandwidth_mbps) link.bandwidth_mbps = *bandwidth_mbps;
  if (rtt_ms) link.rtt_ms = *rtt_ms;
  PlanOptions o = options_.plan;
  o.server_speed_factor = estimator.server_speed_factor();
  o.server_overhead_ms = estimator.server_queue_ms();
  return PlanSplits(device_, server_, link, o);
}

absl::StatusOr<SplitDecision> SplitController::Decide(const LinkEstimator& estimator, int current_split,
                                                      double now_s) {
  EENN_ASSIGN_OR_RETURN(Plan plan, PlanFor(estimator, std::nullopt, std::nullopt));
  SplitDecision d;
  d.split = current_split;
  const bool valid = current_split >= 0 && current_split < static_cast<int>(plan.candidates.size());
  d.current_expected_ms = valid ? plan.candidates[current_split].expected_ms : 0;
  const SplitCandidate& best = plan.best();
  bool move = !valid;
  if (valid && best.split != current_split && now_s - last_change_s_ >= options_.min_dwell_s) {
    if (plan.objective == PlanObjective::kLatency) {
      const double gain = d.current_expected_ms - best.expected_ms;
      move = gain > options_.min_gain_ms && gain > options_.min_gain_ratio * d.current_expected_ms;
    } else {
      move = true;
    }
  }
  if (move) {
    d.split = best.split;
    d.changed = best.split != current_split;
    if (d.changed) last_change_s_ = now_s;
  }
  d.plan = std::move(plan);
  return d;
}

}  // namespace eenn::common
