#include "device/split_planner.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace eenn::device {
namespace {

// Profiled server compute of a sample sent at each split: the planner's
// expected server compute per sample (speed factor 1) over the share sent.
absl::StatusOr<std::vector<double>> ServerMsPerOffload(const SplitPlannerOptions& options) {
  common::PlanOptions o = options.controller.plan;
  o.server_speed_factor = 1;
  o.server_overhead_ms = 0;
  EENN_ASSIGN_OR_RETURN(common::Plan plan, common::PlanSplits(options.device_profile, options.server_profile,
                                                              common::LinkEstimate{}, o));
  std::vector<double> out;
  for (const common::SplitCandidate& c : plan.candidates) {
    out.push_back(c.offload_share > 0 ? c.server_ms / c.offload_share : 0.0);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SplitPlanner>> SplitPlanner::Create(EdgeEngine* engine, DeviceMetrics* metrics,
                                                                   SplitPlannerOptions options) {
  if (engine == nullptr) return absl::InvalidArgumentError("split planner needs an engine");
  const common::ServedModel& m = engine->model();
  for (const common::Profile* p : {&options.device_profile, &options.server_profile}) {
    if (p->model_name != m.name || p->model_version != m.version || p->num_layers() != m.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "profile from ", p->host, " describes ", p->model_name, " version ", p->model_version, " with ",
          p->num_layers(), " layers; the device serves ", m.name, " version ", m.version, " with ",
          m.num_layers, " layers"));
    }
  }
  if (options.interval <= absl::ZeroDuration() || options.probe_interval <= absl::ZeroDuration() ||
      options.min_probe_bytes < 0 || options.max_probe_bytes < options.min_probe_bytes) {
    return absl::InvalidArgumentError("split planner: bad interval or probe sizes");
  }
  EENN_ASSIGN_OR_RETURN(common::SplitController controller,
                        common::SplitController::Create(options.device_profile, options.server_profile,
                                                        options.controller));
  EENN_ASSIGN_OR_RETURN(std::vector<double> server_ms, ServerMsPerOffload(options));
  return std::unique_ptr<SplitPlanner>(
      new SplitPlanner(engine, metrics, std::move(options), std::move(controller), std::move(server_ms)));
}

SplitPlanner::SplitPlanner(EdgeEngine* engine, DeviceMetrics* metrics, SplitPlannerOptions options,
                           common::SplitController controller, std::vector<double> server_ms_per_offload)
    : engine_(engine),
      metrics_(metrics),
      options_(std::move(options)),
      start_(absl::Now()),
      server_expected_ms_(std::move(server_ms_per_offload)),
      estimator_(options_.estimator),
      controller_(std::move(controller)) {}

SplitPlanner::~SplitPlanner() { Stop(); }

double SplitPlanner::NowS() const { return absl::ToDoubleSeconds(absl::Now() - start_); }

void SplitPlanner::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(options_.interval)) Tick();
  });
}

void SplitPlanner::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void SplitPlanner::OnOffload(const OffloadObservation& o) {
  const double now = NowS();
  const double server_ms = (o.server_queue_us + o.server_compute_us) / 1000.0;
  absl::MutexLock lock(&mu_);
  estimator_.AddRoundTrip(static_cast<double>(o.request_bytes), o.round_trip_us / 1000.0, server_ms, now);
  estimator_.AddServerQueue(o.server_queue_us / 1000.0, now);
  if (o.split_layer >= 0 && o.split_layer < static_cast<int>(server_expected_ms_.size())) {
    estimator_.AddServerCompute(o.server_compute_us / 1000.0, server_expected_ms_[o.split_layer], now);
  }
}

void SplitPlanner::Probe(double now_s) {
  OffloadClient* client = engine_->offload_client();
  if (client == nullptr || !engine_->server_state().available) return;
  double bandwidth;
  {
    absl::MutexLock lock(&mu_);
    if (now_s - last_probe_s_ < absl::ToDoubleSeconds(options_.probe_interval)) return;
    last_probe_s_ = now_s;
    bandwidth = estimator_.link().bandwidth_mbps;
  }
  const absl::Duration timeout = absl::Seconds(2);
  // A bare round trip: the RTT.
  absl::Time t0 = absl::Now();
  auto bare = client->Probe(0, timeout);
  if (!bare.ok()) return;
  const double bare_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
  {
    absl::MutexLock lock(&mu_);
    estimator_.AddRoundTrip(0, bare_ms, 0, NowS());
  }
  // A padded one sized to take about probe_target_ms at the estimated rate.
  const int64_t bytes = std::clamp<int64_t>(static_cast<int64_t>(bandwidth * 125.0 * options_.probe_target_ms),
                                            options_.min_probe_bytes, options_.max_probe_bytes);
  t0 = absl::Now();
  auto sent = client->Probe(bytes, timeout);
  if (!sent.ok()) return;
  const double padded_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
  absl::MutexLock lock(&mu_);
  estimator_.AddRoundTrip(static_cast<double>(*sent), padded_ms, 0, NowS());
}

void SplitPlanner::Tick() {
  Probe(NowS());
  const int current = engine_->split_layer();
  absl::StatusOr<common::SplitDecision> d;
  common::LinkEstimate link;
  double speed;
  {
    absl::MutexLock lock(&mu_);
    d = controller_.Decide(estimator_, current, NowS());
    link = estimator_.link();
    speed = estimator_.server_speed_factor();
  }
  if (!d.ok()) {
    if (options_.log) std::fprintf(stderr, "eenn-device: planner: %s\n", d.status().ToString().c_str());
    return;
  }
  if (metrics_) {
    metrics_->link_bandwidth->Set(link.bandwidth_mbps * 1e6 / 8);
    metrics_->link_rtt->Set(link.rtt_ms * 1e-3);
    metrics_->server_speed_factor->Set(speed);
    metrics_->plan_best_split->Set(d->plan.best_split);
    metrics_->plan_expected->Set(d->plan.candidates[d->split].expected_ms * 1e-3);
  }
  // Without a reachable server every split would fall back: keep it.
  if (!d->changed || !engine_->server_state().available) return;
  if (auto s = engine_->SetSplitLayer(d->split); !s.ok()) return;
  if (metrics_) metrics_->split_changes->Increment();
  if (options_.log) {
    std::fprintf(stderr,
                 "eenn-device: planner: split %d -> %d (expected %.3f -> %.3f ms; link %.1f Mbit/s, RTT %.3f ms, "
                 "server speed x%.2f)\n",
                 current, d->split, d->current_expected_ms, d->plan.candidates[d->split].expected_ms,
                 link.bandwidth_mbps, link.rtt_ms, speed);
  }
}

absl::StatusOr<PlanSnapshot> SplitPlanner::Query(std::optional<double> bandwidth_mbps,
                                                 std::optional<double> rtt_ms) {
  PlanSnapshot snap;
  snap.current_split = engine_->split_layer();
  absl::MutexLock lock(&mu_);
  EENN_ASSIGN_OR_RETURN(snap.plan, controller_.PlanFor(estimator_, bandwidth_mbps, rtt_ms));
  snap.server_speed_factor = estimator_.server_speed_factor();
  snap.server_queue_ms = estimator_.server_queue_ms();
  snap.round_trips = estimator_.round_trips();
  snap.hypothetical = bandwidth_mbps.has_value() || rtt_ms.has_value();
  return snap;
}

}  // namespace eenn::device
