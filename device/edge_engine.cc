#include "device/edge_engine.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/bundle.h"
#include "common/status_macros.h"
#include "common/threads.h"
#include "device/metrics.h"

namespace eenn::device {
namespace {
// CPU time of the calling thread (-1 where the clock is missing).
double ThreadCpuSeconds() {
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return -1;
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

const char* CodeWord(absl::StatusCode c) {
  switch (c) {
    case absl::StatusCode::kUnavailable: return "unavailable";
    case absl::StatusCode::kDeadlineExceeded: return "deadline";
    case absl::StatusCode::kResourceExhausted: return "overloaded";
    case absl::StatusCode::kFailedPrecondition: return "incompatible";
    case absl::StatusCode::kInvalidArgument: return "refused";
    default: return "error";
  }
}

}  // namespace

const char* DecisionName(Decision d) {
  switch (d) {
    case Decision::kDevice: return "device";
    case Decision::kServer: return "server";
    case Decision::kFallback: return "fallback";
  }
  return "unknown";
}

class EdgeEngine::Impl {
 public:
  Impl(common::Bundle bundle, const EdgeEngineOptions& options, std::unique_ptr<OffloadClient> client,
       DeviceMetrics* metrics)
      : bundle_(std::move(bundle)),
        model_(common::Describe(bundle_)),
        options_(options),
        client_(std::move(client)),
        metrics_(metrics),
        gate_(options_.server_load) {
    split_ = options_.split_layer;
    {
      absl::MutexLock lock(&active_mu_);
      active_ = std::make_shared<const ActiveConfig>(ActiveConfig{-1, options_.split_layer, bundle_.policy});
    }
    if (metrics_) {
      metrics_->queue_capacity->Set(options_.queue_capacity);
      metrics_->split_layer->Set(split_);
      metrics_->server_available->Set(0);
    }
    server_detail_ = client_ ? "not checked yet" : "no offload server configured";
  }

  ~Impl() { Shutdown(absl::ZeroDuration()); }

  absl::Status Warmup() {
    std::vector<int64_t> shape = model_.input_shape;
    shape.insert(shape.begin(), 1);
    auto r = bundle_.model->Run(torch::zeros(shape), 0, model_.num_layers, bundle_.policy);
    if (!r.ok()) return r.status();
    if (client_ && options_.server_load.enabled) SeedLocalEstimate(shape);
    return absl::OkStatus();
  }

  // The server-aware gate compares the server's expected answer with the
  // device finishing a request itself: seed that from the split layer on
  // (the bundle's exits evaluated, none firing: every layer runs), the
  // median of a few passes; local finishes replace it as they come.
  void SeedLocalEstimate(const std::vector<int64_t>& shape) {
    const int split = split_.load();
    if (split >= model_.num_layers) return;
    const common::ExitPolicy never = common::NeverFiring(bundle_.policy);
    auto head = bundle_.model->Run(torch::randn(shape), 0, split, never);
    if (!head.ok() || head->decided[0]) return;
    const torch::Tensor pending = head->pending_input.contiguous();
    std::vector<int64_t> us;
    for (int i = 0; i < 5; ++i) {
      const absl::Time t0 = absl::Now();
      if (!bundle_.model->Run(pending, split, model_.num_layers, never).ok()) return;
      us.push_back(Micros(absl::Now() - t0));
    }
    std::sort(us.begin(), us.end());
    gate_.ObserveLocal(split, us[us.size() / 2]);
  }

  void Start() {
    if (client_) {
      ProbeServer();
      monitor_ = std::thread([this] { MonitorLoop(); });
    }
    for (int i = 0; i < std::max(1, options_.workers); ++i) workers_.emplace_back([this] { WorkerLoop(); });
  }

  const common::ServedModel& model() const { return model_; }
  int split_layer() const { return split_.load(); }
  OffloadClient* offload_client() const { return client_.get(); }

  absl::Status SetSplitLayer(int split) {
    if (split < 0 || split > model_.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("split layer ", split, " is out of range [0, ",
                                                     model_.num_layers, "]"));
    }
    {
      absl::MutexLock lock(&active_mu_);
      auto next = std::make_shared<ActiveConfig>(*active_);
      next->split = split;
      active_ = std::move(next);
      split_ = split;
    }
    if (metrics_) metrics_->split_layer->Set(split);
    return absl::OkStatus();
  }

  absl::Status SetExitConfig(int index, int split, const std::vector<float>& thresholds) {
    if (split < 0 || split > model_.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("split layer ", split, " is out of range [0, ",
                                                     model_.num_layers, "]"));
    }
    common::ExitPolicy policy = bundle_.policy;
    policy.thresholds = thresholds;
    EENN_RETURN_IF_ERROR(bundle_.model->ValidatePolicy(policy));
    {
      absl::MutexLock lock(&active_mu_);
      active_ = std::make_shared<const ActiveConfig>(ActiveConfig{index, split, std::move(policy)});
      split_ = split;
    }
    if (metrics_) metrics_->split_layer->Set(split);
    return absl::OkStatus();
  }

  int exit_config() const {
    absl::MutexLock lock(&active_mu_);
    return active_->index;
  }

  ServerState server_state() const {
    absl::MutexLock lock(&server_mu_);
    return ServerState{server_available_, server_detail_};
  }

  ServerState ProbeServer() {
    if (!client_) return server_state();
    auto info = client_->GetModelInfo(options_.offload_timeout);
    if (!info.ok()) {
      SetServer(false, absl::StrCat("offload server ", client_->target(), " unreachable: ",
                                    info.status().ToString()));
    } else if (info->name != model_.name || info->version != model_.version) {
      SetServer(false, absl::StrCat("offload server ", client_->target(), " serves model '", info->name,
                                    "' version '", info->version, "' but this device serves '", model_.name,
                                    "' version '", model_.version, "': refusing to offload to it"));
    } else {
      if (info->has_load) {
        gate_.ObserveReport(info->load);
        PublishLoad();
      }
      SetServer(true, absl::StrCat("offload server ", client_->target(), " serves model '", info->name,
                                   "' version '", info->version, "'"));
    }
    return server_state();
  }

  ServerLoadState server_load() const { return gate_.state(); }

  void Submit(ClassifyInput input, Callback done) {
    arrivals_.fetch_add(1, std::memory_order_relaxed);
    if (options_.on_arrival) options_.on_arrival();
    absl::Status refused;
    {
      absl::MutexLock lock(&mu_);
      if (!accepting_) {
        refused = absl::UnavailableError("eenn-device is shutting down");
      } else if (static_cast<int>(queue_.size()) >= options_.queue_capacity) {
        refused = absl::ResourceExhaustedError(absl::StrCat(
            "eenn-device input queue is full (", options_.queue_capacity, " requests waiting)"));
      } else {
        queue_.push_back(Item{std::move(input), std::move(done), absl::Now()});
        if (metrics_) metrics_->queue_depth->Set(static_cast<double>(queue_.size()));
        return;
      }
    }
    if (metrics_) {
      metrics_->RequestDone(refused.code() == absl::StatusCode::kResourceExhausted ? "rejected" : "failed",
                            refused.code());
    }
    done(refused);
  }

  void StopAccepting() {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
  }

  void Shutdown(absl::Duration timeout) {
    std::deque<Item> left;
    {
      absl::MutexLock lock(&mu_);
      accepting_ = false;
      auto drained = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return queue_.empty() && running_ == 0; };
      mu_.AwaitWithTimeout(absl::Condition(&drained), timeout);
      left.swap(queue_);
      stopping_ = true;
    }
    for (auto& it : left) {
      if (metrics_) metrics_->RequestDone("failed", absl::StatusCode::kUnavailable);
      it.done(absl::UnavailableError("eenn-device shut down before this request ran"));
    }
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_monitor_.store(true);
    {
      absl::MutexLock lock(&server_mu_);  // wake the monitor
      monitor_wakeups_++;
    }
    if (monitor_.joinable()) monitor_.join();
  }

  int queue_depth() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(queue_.size());
  }

 private:
  struct Item {
    ClassifyInput input;
    Callback done;
    absl::Time enqueued;
  };

  // The exit configuration requests start with (swapped whole).
  struct ActiveConfig {
    int index = -1;
    int split = 0;
    common::ExitPolicy policy;
  };

  std::shared_ptr<const ActiveConfig> Active() const {
    absl::MutexLock lock(&active_mu_);
    return active_;
  }

  void PublishLoad() {
    if (!metrics_) return;
    const ServerLoadState s = gate_.state();
    metrics_->server_expected_rtt->Set(s.expected_ms / 1000.0);
    metrics_->server_base_rtt->Set(s.base_ms / 1000.0);
    metrics_->local_finish->Set(gate_.LocalMs(split_.load()) / 1000.0);
    metrics_->server_queue_fill->Set(s.queue_capacity > 0 ? static_cast<double>(s.queue_depth) / s.queue_capacity
                                                          : 0.0);
  }

  void SetServer(bool available, std::string detail) {
    bool changed;
    {
      absl::MutexLock lock(&server_mu_);
      changed = available != server_available_ || detail != server_detail_;
      server_available_ = available;
      server_detail_ = detail;
    }
    if (metrics_) metrics_->server_available->Set(available ? 1 : 0);
    if (changed) {
      std::fprintf(stderr, "eenn-device: %s%s\n", available ? "offloading to " : "", detail.c_str());
    }
  }

  void MonitorLoop() {
    while (!stop_monitor_.load()) {
      {
        absl::MutexLock lock(&server_mu_);
        const uint64_t seen = monitor_wakeups_;
        auto woken = [this, seen]() ABSL_SHARED_LOCKS_REQUIRED(server_mu_) {
          return monitor_wakeups_ != seen;
        };
        // Down or unverified: probe every probe_interval. Up while the load
        // gate declines it (never when the gate is off): refresh its load
        // every refresh_interval. Otherwise nothing to check.
        auto due = [this]() ABSL_SHARED_LOCKS_REQUIRED(server_mu_) { return !server_available_ || gate_.declining(); };
        server_mu_.AwaitWithTimeout(absl::Condition(&woken), server_available_ && gate_.declining()
                                                                 ? options_.server_load.refresh_interval
                                                                 : options_.probe_interval);
        if (stop_monitor_.load() || !due()) continue;
      }
      ProbeServer();
    }
  }

  void WorkerLoop() {
    common::InitComputeThread();
    torch::InferenceMode guard;
    // The worker's own CPU time is its service's work only when it computes
    // alone (one LibTorch thread); with a pool, the pool's threads do part.
    const bool computes_alone = at::get_num_threads() == 1;
    mu_.Lock();
    while (true) {
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
      mu_.Await(absl::Condition(&ready));
      if (stopping_ && queue_.empty()) break;
      Item item = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
      const absl::Time busy_from = absl::Now();
      const int64_t arrivals_from = arrivals_.load(std::memory_order_relaxed);
      const double cpu_from = ThreadCpuSeconds();
      if (metrics_) metrics_->queue_depth->Set(static_cast<double>(queue_.size()));
      mu_.Unlock();
      int config = -1;
      absl::StatusOr<ClassifyOutcome> out = Process(item, &config);
      std::optional<ServiceSample> sample;
      if (out.ok() && options_.on_service) {
        const StageTimes& t = out->timings;
        ServiceSample& s = sample.emplace();
        s.exit_config = config;
        s.exit_index = std::max(0, out->result.exit_index);
        s.preprocess_us = t.preprocess_us;
        s.device_compute_us = t.device_compute_us;
        s.offloaded = out->decided != Decision::kDevice;
        s.remote_us = s.offloaded ? t.encode_us + t.offload_us + t.fallback_us : 0;
      }
      if (metrics_) {
        if (out.ok()) {
          metrics_->RequestDone(DecisionName(out->decided), absl::StatusCode::kOk);
          metrics_->ExitTaken(out->result.exit_layer);
          metrics_->end_to_end_seconds->Observe(out->timings.total_us * 1e-6);
        } else {
          metrics_->RequestDone("failed", out.status().code());
        }
      }
      item.done(std::move(out));
      const absl::Duration busy = absl::Now() - busy_from;
      const double cpu_to = ThreadCpuSeconds();
      const bool cpu_known = cpu_from >= 0 && cpu_to >= 0;
      const double cpu_s = cpu_known ? std::max(0.0, cpu_to - cpu_from) : 0.0;
      const int64_t arrived = arrivals_.load(std::memory_order_relaxed) - arrivals_from;
      if (metrics_) {
        metrics_->worker_busy_seconds->Increment(absl::ToDoubleSeconds(busy));
        if (cpu_known) metrics_->worker_cpu_seconds->Increment(cpu_s);
        metrics_->arrivals_while_busy->Increment(static_cast<double>(arrived));
      }
      if (sample) {
        sample->busy_us = absl::ToInt64Microseconds(busy);
        sample->cpu_us = computes_alone && cpu_known ? static_cast<int64_t>(cpu_s * 1e6) : -1;
        sample->arrivals = arrived;
        options_.on_service(*sample);
      }
      mu_.Lock();
      --running_;
    }
    mu_.Unlock();
  }

  // Builds the [1, C, H, W] input tensor of a request.
  absl::StatusOr<torch::Tensor> Preprocess(const ClassifyInput& in) {
    std::vector<int64_t> shape = model_.input_shape;
    shape.insert(shape.begin(), 1);
    torch::Tensor x = torch::empty(shape, torch::kFloat32);
    const int sources = (!in.image_bytes.empty()) + (!in.image.empty()) + in.tensor.has_value();
    if (sources != 1) {
      return absl::InvalidArgumentError("a request needs exactly one input: image bytes, an image or a tensor");
    }
    if (in.tensor.has_value()) {
      if (in.tensor->shape != shape) {
        return absl::InvalidArgumentError(absl::StrCat("input tensor shape [", absl::StrJoin(in.tensor->shape, ", "),
                                                       "] is not the model's [", absl::StrJoin(shape, ", "), "]"));
      }
      EENN_RETURN_IF_ERROR(common::DecodeTensor(common::View(*in.tensor), x.numel(), x.data_ptr<float>(), x.numel()));
      return x;
    }
    cv::Mat decoded;
    const cv::Mat* image = &in.image;
    if (!in.image_bytes.empty()) {
      EENN_ASSIGN_OR_RETURN(decoded, common::DecodeImage(in.image_bytes, options_.decode_limits));
      image = &decoded;
    }
    EENN_RETURN_IF_ERROR(common::PreprocessImage(*image, bundle_.manifest.input, x.data_ptr<float>()));
    return x;
  }

  void Answer(ClassifyOutcome& out, common::ExitResult r) {
    out.result = std::move(r);
    if (out.result.class_id >= 0 && out.result.class_id < static_cast<int64_t>(model_.class_names.size())) {
      out.class_name = model_.class_names[out.result.class_id];
    }
  }

  absl::StatusOr<ClassifyOutcome> Process(Item& item, int* config) {
    const absl::Time t0 = absl::Now();
    ClassifyOutcome out;
    out.request_id = item.input.request_id;
    out.timings.queue_us = Micros(t0 - item.enqueued);
    if (metrics_) metrics_->queue_seconds->Observe(absl::ToDoubleSeconds(t0 - item.enqueued));
    if (item.input.deadline <= t0) {
      return absl::DeadlineExceededError(absl::StrCat("deadline passed after ", out.timings.queue_us,
                                                      " us in the eenn-device queue"));
    }
    const std::shared_ptr<const ActiveConfig> active = Active();
    const common::ExitPolicy& policy = active->policy;
    *config = active->index;
    const int split = item.input.split_layer.value_or(active->split);
    if (split < 0 || split > model_.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("split layer ", split, " is out of range [0, ",
                                                     model_.num_layers, "]"));
    }
    out.split_layer = split;
    auto finish = [&](ClassifyOutcome& o) {
      o.timings.total_us = Micros(absl::Now() - item.enqueued);
      return o;
    };
    try {
      EENN_ASSIGN_OR_RETURN(torch::Tensor x, Preprocess(item.input));
      const absl::Time t1 = absl::Now();
      out.timings.preprocess_us = Micros(t1 - t0);
      if (metrics_) metrics_->preprocess_seconds->Observe(absl::ToDoubleSeconds(t1 - t0));

      // Device part: layers [0, split) and their exits.
      torch::Tensor pending = x;
      std::vector<float> device_confidences;
      if (split > 0) {
        EENN_ASSIGN_OR_RETURN(common::PartialResult part, bundle_.model->Run(x, 0, split, policy));
        const absl::Time t2 = absl::Now();
        out.timings.device_compute_us = Micros(t2 - t1);
        if (metrics_) metrics_->device_compute_seconds->Observe(absl::ToDoubleSeconds(t2 - t1));
        if (part.decided[0]) {
          out.decided = Decision::kDevice;
          Answer(out, std::move(part.results[0]));
          return finish(out);
        }
        device_confidences = part.results[0].confidences;
        pending = part.pending_input.contiguous();
      }

      // Offload, unless the server is known to be down or incompatible, or
      // too busy to answer within this request's budget.
      const ServerState server = server_state();
      absl::Status offload_error;
      const char* fallback_word = nullptr;  // metrics reason; default: from the error's code
      absl::Duration timeout = options_.offload_timeout;
      bool callers_timeout = false;  // the caller's deadline, not the device's, bounds the offload
      if (item.input.deadline != absl::InfiniteFuture()) {
        const absl::Duration left = item.input.deadline - absl::Now();
        if (left <= absl::ZeroDuration()) {  // the caller has given up: nothing to offload or finish
          return absl::DeadlineExceededError(absl::StrCat("deadline passed before offloading at split ", split, ", ",
                                                          Micros(absl::Now() - t0),
                                                          " us after leaving the eenn-device queue"));
        }
        // Leave time to finish locally if the server does not answer.
        if (left / 2 < timeout) {
          timeout = left / 2;
          callers_timeout = true;
        }
      }
      OffloadVerdict verdict;
      if (client_ && server.available) verdict = gate_.Decide(timeout, split);
      if (!client_) {
        offload_error = absl::UnavailableError("no offload server configured");
      } else if (!server.available) {
        offload_error = absl::UnavailableError(server.detail);
      } else if (!verdict.offload) {
        offload_error = absl::UnavailableError(verdict.reason);
        fallback_word = "busy";
        if (verdict.started_declining) {  // the monitor starts refreshing the load now
          absl::MutexLock lock(&server_mu_);
          ++monitor_wakeups_;
        }
      } else {
        const absl::Time t3 = absl::Now();
        std::vector<int64_t> shape(pending.sizes().begin(), pending.sizes().end());
        auto encoded = common::EncodeTensor(pending.data_ptr<float>(), shape, options_.wire);
        const absl::Time t4 = absl::Now();
        out.timings.encode_us = Micros(t4 - t3);
        if (metrics_) metrics_->encode_seconds->Observe(absl::ToDoubleSeconds(t4 - t3));
        if (!encoded.ok()) {
          offload_error = encoded.status();
        } else {
          ResumeCall call{item.input.request_id, model_.name, model_.version, split, std::move(*encoded)};
          auto answer = client_->Resume(std::move(call), timeout);
          const absl::Time t5 = absl::Now();
          out.timings.offload_us = Micros(t5 - t4);
          if (metrics_) metrics_->offload_seconds->Observe(absl::ToDoubleSeconds(t5 - t4));
          if (answer.ok()) {
            gate_.ObserveOffload(out.timings.offload_us, answer->server_queue_us, answer->server_load);
          } else if (answer.status().code() == absl::StatusCode::kDeadlineExceeded) {
            gate_.ObserveTimeout(t5 - t4);
          } else if (answer.status().code() == absl::StatusCode::kResourceExhausted) {
            gate_.ObserveOverloaded();
          }
          PublishLoad();
          if (answer.ok()) {
            out.decided = Decision::kServer;
            out.offload_bytes = answer->request_bytes;
            out.timings.server_queue_us = answer->server_queue_us;
            out.timings.server_compute_us = answer->server_compute_us;
            if (metrics_) {
              metrics_->offloads->Increment();
              metrics_->sent_bytes->Increment(static_cast<double>(answer->request_bytes));
              metrics_->received_bytes->Increment(static_cast<double>(answer->reply_bytes));
              metrics_->server_queue_seconds->Observe(answer->server_queue_us * 1e-6);
              metrics_->server_compute_seconds->Observe(answer->server_compute_us * 1e-6);
            }
            if (options_.on_offload) {
              options_.on_offload({split, answer->request_bytes, answer->reply_bytes, out.timings.offload_us,
                                   answer->server_queue_us, answer->server_compute_us});
            }
            common::ExitResult r = std::move(answer->predictions[0]);
            r.exit_index = bundle_.model->ExitIndexAtLayer(r.exit_layer);
            r.confidences.insert(r.confidences.begin(), device_confidences.begin(), device_confidences.end());
            Answer(out, std::move(r));
            return finish(out);
          }
          offload_error = answer.status();
          const auto code = offload_error.code();
          // A timeout marks the server down unless the load gate is on: then
          // it is taken as load (the gate declines until the server's reports
          // say it caught up) and the monitor, polling while the gate
          // declines, marks it down if it stops answering. A timeout the
          // caller's deadline set says nothing about the server: it had less
          // than the device's own offload timeout.
          if (code == absl::StatusCode::kUnavailable ||
              (code == absl::StatusCode::kDeadlineExceeded && !options_.server_load.enabled && !callers_timeout)) {
            SetServer(false, absl::StrCat("offload server ", client_->target(), " failed a request: ",
                                          offload_error.ToString()));
          } else if (code == absl::StatusCode::kFailedPrecondition) {
            SetServer(false, std::string(offload_error.message()));
          }
        }
      }

      // Fallback: finish locally from the split tensor.
      const absl::Time t6 = absl::Now();
      EENN_ASSIGN_OR_RETURN(common::PartialResult rest,
                            bundle_.model->Run(pending, split, model_.num_layers, policy));
      const absl::Time t7 = absl::Now();
      out.timings.fallback_us = Micros(t7 - t6);
      gate_.ObserveLocal(split, out.timings.fallback_us);
      PublishLoad();
      out.decided = Decision::kFallback;
      out.fallback_reason = offload_error.ToString();
      if (metrics_) {
        metrics_->fallback_seconds->Observe(absl::ToDoubleSeconds(t7 - t6));
        metrics_->Fallback(fallback_word ? fallback_word
                                         : client_ ? CodeWord(offload_error.code())
                                                   : "unavailable");
      }
      common::ExitResult r = std::move(rest.results[0]);
      r.confidences.insert(r.confidences.begin(), device_confidences.begin(), device_confidences.end());
      Answer(out, std::move(r));
      return finish(out);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("model '", model_.name, "' failed: ", e.what_without_backtrace()));
    } catch (const cv::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("image processing failed: ", e.what()));
    }
  }

  common::Bundle bundle_;
  common::ServedModel model_;
  EdgeEngineOptions options_;
  std::unique_ptr<OffloadClient> client_;
  DeviceMetrics* metrics_;
  ServerLoadGate gate_;
  std::atomic<int> split_{0};
  std::atomic<int64_t> arrivals_{0};  // every Submit, accepted or refused
  mutable absl::Mutex active_mu_;
  std::shared_ptr<const ActiveConfig> active_ ABSL_GUARDED_BY(active_mu_);
  std::vector<std::thread> workers_;
  std::thread monitor_;
  std::atomic<bool> stop_monitor_{false};

  mutable absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  mutable absl::Mutex server_mu_;
  bool server_available_ ABSL_GUARDED_BY(server_mu_) = false;
  std::string server_detail_ ABSL_GUARDED_BY(server_mu_);
  uint64_t monitor_wakeups_ ABSL_GUARDED_BY(server_mu_) = 0;
};

absl::StatusOr<std::unique_ptr<EdgeEngine>> EdgeEngine::Create(const std::string& bundle_dir,
                                                               const EdgeEngineOptions& options,
                                                               std::unique_ptr<OffloadClient> client,
                                                               DeviceMetrics* metrics) {
  if (options.queue_capacity < 1 || options.workers < 1) {
    return absl::InvalidArgumentError("queue_capacity and workers must be >= 1");
  }
  EENN_ASSIGN_OR_RETURN(common::Bundle bundle, common::LoadBundle(bundle_dir));
  EdgeEngineOptions o = options;
  const int num_layers = bundle.model->num_layers();
  if (o.split_layer < 0) {
    // Default: just after the last early exit, so every early exit runs on the device.
    const auto& exits = bundle.model->exit_layers();
    o.split_layer = exits.size() >= 2 ? exits[exits.size() - 2] + 1 : 0;
  }
  if (o.split_layer > num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("split layer ", o.split_layer, " is out of range [0, ",
                                                   num_layers, "] for bundle '", bundle_dir, "'"));
  }
  auto impl = std::make_unique<Impl>(std::move(bundle), o, std::move(client), metrics);
  if (o.warmup) EENN_RETURN_IF_ERROR(impl->Warmup());
  impl->Start();
  return std::unique_ptr<EdgeEngine>(new EdgeEngine(std::move(impl)));
}

EdgeEngine::EdgeEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EdgeEngine::~EdgeEngine() = default;
const common::ServedModel& EdgeEngine::model() const { return impl_->model(); }
int EdgeEngine::split_layer() const { return impl_->split_layer(); }
absl::Status EdgeEngine::SetSplitLayer(int split) { return impl_->SetSplitLayer(split); }
absl::Status EdgeEngine::SetExitConfig(int index, int split, const std::vector<float>& thresholds) {
  return impl_->SetExitConfig(index, split, thresholds);
}
int EdgeEngine::exit_config() const { return impl_->exit_config(); }
OffloadClient* EdgeEngine::offload_client() const { return impl_->offload_client(); }
ServerState EdgeEngine::server_state() const { return impl_->server_state(); }
ServerLoadState EdgeEngine::server_load() const { return impl_->server_load(); }
ServerState EdgeEngine::ProbeServer() { return impl_->ProbeServer(); }
void EdgeEngine::Submit(ClassifyInput input, Callback done) { impl_->Submit(std::move(input), std::move(done)); }
void EdgeEngine::StopAccepting() { impl_->StopAccepting(); }
void EdgeEngine::Shutdown(absl::Duration timeout) { impl_->Shutdown(timeout); }
int EdgeEngine::queue_depth() const { return impl_->queue_depth(); }

absl::StatusOr<ClassifyOutcome> EdgeEngine::ClassifySync(ClassifyInput input) {
  absl::Notification done;
  absl::StatusOr<ClassifyOutcome> result;
  Submit(std::move(input), [&](absl::StatusOr<ClassifyOutcome> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

}  // namespace eenn::device
