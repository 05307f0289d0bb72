#include "device/load_control.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace eenn::device {

absl::StatusOr<std::unique_ptr<LoadControl>> LoadControl::Create(EdgeEngine* engine, DeviceMetrics* metrics,
                                                                 common::ConfigSet set, LoadControlOptions options) {
  if (engine == nullptr) return absl::InvalidArgumentError("load control needs an engine");
  if (options.interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("load control: the interval must be > 0");
  }
  const common::ServedModel& m = engine->model();
  for (size_t i = 0; i < set.configs.size(); ++i) {
    const common::ExitConfig& c = set.configs[i];
    if (c.split < 0 || c.split > m.num_layers || c.thresholds.size() != m.exit_layers.size()) {
      return absl::InvalidArgumentError(absl::StrCat("exit configuration ", i, " (split ", c.split, ", ",
                                                     c.thresholds.size(), " thresholds) does not fit model '",
                                                     m.name, "' (", m.num_layers, " layers, ",
                                                     m.exit_layers.size(), " exits)"));
    }
  }
  EENN_ASSIGN_OR_RETURN(common::LoadController controller,
                        common::LoadController::Create(std::move(set), options.controller));
  const common::ExitConfig& first = controller.set().configs[controller.state().config];
  EENN_RETURN_IF_ERROR(engine->SetExitConfig(controller.state().config, first.split, first.thresholds));
  auto lc = std::unique_ptr<LoadControl>(new LoadControl(engine, metrics, std::move(controller), options));
  lc->Publish(lc->State().state);
  return lc;
}

LoadControl::LoadControl(EdgeEngine* engine, DeviceMetrics* metrics, common::LoadController controller,
                         LoadControlOptions options)
    : engine_(engine),
      metrics_(metrics),
      options_(std::move(options)),
      start_(absl::Now()),
      controller_(std::move(controller)) {
  if (const auto& o = controller_.options(); o.pressure_margin > 0) {
    high_water_count_ = std::max(1, static_cast<int>(std::ceil(o.high_water * o.queue_capacity)));
  }
}

LoadControl::~LoadControl() { Stop(); }

double LoadControl::NowS() const { return absl::ToDoubleSeconds(absl::Now() - start_); }

void LoadControl::Start() {
  if (thread_.joinable()) return;
  Tick();  // the first tick starts the rate measurement
  thread_ = std::thread([this] {
    for (;;) {
      bool woken;
      {
        absl::MutexLock lock(&wake_mu_);
        auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) { return wake_ || stopping_; };
        wake_mu_.AwaitWithTimeout(absl::Condition(&due), options_.interval);
        if (stopping_) return;
        woken = wake_;
        wake_ = false;
      }
      Tick();
      if (woken) {  // at most one early decision per gap
        absl::MutexLock lock(&wake_mu_);
        wake_mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.min_tick_gap);
        if (stopping_) return;
      }
    }
  });
}

void LoadControl::Stop() {
  {
    absl::MutexLock lock(&wake_mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void LoadControl::OnArrival() {
  arrivals_.fetch_add(1, std::memory_order_relaxed);
  const bool busy_rate = options_.busy_rate;
  if (!busy_rate && high_water_count_ <= 0) return;
  // Called before the request is queued: it finds queue_depth() waiting. With
  // the busy stretch, read under its lock, so that concurrent arrivals update
  // it in the order they saw the queue (Submit calls this before taking the
  // engine's lock, so the order of the two locks is always this one).
  int waiting = 0;
  if (busy_rate) {
    absl::MutexLock lock(&stretch_mu_);
    waiting = engine_->queue_depth();
    const int64_t now_us = absl::ToInt64Microseconds(absl::Now() - start_);
    if (waiting == 0) {
      stretch_arrivals_ = 0;
      stretch_first_us_ = now_us;
    }
    ++stretch_arrivals_;
    stretch_last_us_ = now_us;
  } else {
    waiting = engine_->queue_depth();
  }
  if (high_water_count_ <= 0 || waiting + 1 < high_water_count_) return;
  absl::MutexLock lock(&wake_mu_);
  wake_ = true;
}

void LoadControl::OnService(const ServiceSample& s) {
  common::ServiceObservation o;
  o.config = s.exit_config;
  o.exit = s.exit_index;
  o.device_ms = s.device_compute_us / 1000.0;
  o.remote_ms = s.remote_us / 1000.0;
  // Everything the worker spent that the configuration does not change:
  // preprocessing, bookkeeping, the reply hand-off (and other threads'
  // share of the core meanwhile), so that the predicted service time is the
  // queue's.
  o.fixed_ms = std::max(s.preprocess_us, s.busy_us - s.device_compute_us - s.remote_us) / 1000.0;
  o.offloaded = s.offloaded;
  // What other threads took from the worker meanwhile (on a core it shares
  // with the request handling: the arrivals' work); not while it waited for
  // an offload's round trip.
  o.stolen_ms = s.cpu_us >= 0 && !s.offloaded ? std::max<int64_t>(0, s.busy_us - s.cpu_us) / 1000.0 : -1;
  o.arrivals = s.arrivals;
  const double now = NowS();
  absl::MutexLock lock(&pending_mu_);
  if (pending_.size() < 100000) pending_.emplace_back(o, now);
}

std::pair<int64_t, double> LoadControl::BusyStretch() const {
  // Its gaps from the first arrival to the last: the time since the last
  // does not count (a decision an arrival brings forward comes right after
  // it, and n arrivals over the time since the first would overstate the
  // rate by n / (n - 1)).
  absl::MutexLock lock(&stretch_mu_);
  if (stretch_arrivals_ < 2 || stretch_last_us_ <= stretch_first_us_) return {0, 0.0};
  return {stretch_arrivals_ - 1, (stretch_last_us_ - stretch_first_us_) * 1e-6};
}

void LoadControl::Tick() {
  const int queue = engine_->queue_depth();
  const auto [stretch_gaps, stretch_span_s] = BusyStretch();
  common::ControllerState s;
  common::ExitConfig config;
  std::vector<std::pair<common::ServiceObservation, double>> services;
  {
    absl::MutexLock lock(&pending_mu_);
    services.swap(pending_);
  }
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [o, t] : services) controller_.AddService(o, t);
    controller_.AddArrivals(arrivals_.exchange(0));
    controller_.SetBusyStretch(stretch_gaps, stretch_span_s);
    s = controller_.Tick(queue, NowS());
    config = controller_.set().configs[s.config];
  }
  if (s.changed) {
    auto applied = engine_->SetExitConfig(s.config, config.split, config.thresholds);
    if (options_.log) {
      std::fprintf(stderr,
                   "eenn-device: exit configuration %d (split %d, expected accuracy %.2f%%, device %.3f ms, "
                   "offload %.1f%%): arrivals %.1f/s (used %.1f/s), queue %d, predicted loss %.4f%s\n",
                   s.config, config.split, 100 * config.accuracy, config.device_ms, 100 * config.offload_share,
                   s.arrival_rate, s.rate_used, s.queue_length, s.predicted_loss,
                   applied.ok() ? "" : absl::StrCat(" (not applied: ", applied.ToString(), ")").c_str());
    }
  }
  Publish(s);
}

void LoadControl::Publish(const common::ControllerState& s) {
  if (metrics_ == nullptr) return;
  metrics_->exit_config->Set(s.config);
  metrics_->exit_config_accuracy->Set(s.expected_accuracy);
  metrics_->predicted_loss->Set(s.predicted_loss);
  metrics_->arrival_rate->Set(s.arrival_rate);
  metrics_->arrival_work->Set(s.arrival_work_ms / 1000.0);
  if (s.changed) metrics_->exit_config_changes->Increment();
}

LoadControlSnapshot LoadControl::State() const {
  absl::MutexLock lock(&mu_);
  LoadControlSnapshot snap;
  snap.state = controller_.state();
  snap.config = controller_.set().configs[snap.state.config];
  snap.num_configs = static_cast<int>(controller_.set().configs.size());
  snap.loss_target = controller_.options().loss_target;
  return snap;
}

}  // namespace eenn::device
