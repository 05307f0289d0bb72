#include "server/offload_engine.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/bundle.h"
#include "common/status_macros.h"
#include "common/threads.h"
#include "server/metrics.h"

namespace eenn::server {
namespace {

int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

std::string ShapeString(const std::vector<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

int64_t NumElements(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

}  // namespace

class OffloadEngine::Impl {
 public:
  Impl(common::Bundle bundle, const OffloadEngineOptions& options, ServerMetrics* metrics)
      : bundle_(std::move(bundle)),
        model_(common::Describe(bundle_)),
        options_(options),
        metrics_(metrics) {
    if (metrics_) metrics_->queue_capacity->Set(options_.queue_capacity);
  }

  ~Impl() { Shutdown(absl::ZeroDuration()); }

  absl::Status Warmup() {
    for (int split = 0; split < model_.num_layers; ++split) {
      std::vector<int64_t> shape = model_.layer_input_shapes[split];
      shape.insert(shape.begin(), 1);
      auto r = bundle_.model->Run(torch::zeros(shape), split, model_.num_layers, bundle_.policy);
      if (!r.ok()) return r.status();
    }
    return absl::OkStatus();
  }

  void Start() {
    for (int i = 0; i < std::max(1, options_.executors); ++i) {
      executors_.emplace_back([this] { ExecutorLoop(); });
    }
  }

  const common::ServedModel& model() const { return model_; }
  const OffloadEngineOptions& options() const { return options_; }

  absl::Status ValidateShape(int split, const std::vector<int64_t>& shape) const {
    if (split < 0 || split >= model_.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("split_layer ", split, " is out of range: model '",
                                                     model_.name, "' resumes at layers 0..",
                                                     model_.num_layers - 1));
    }
    const auto& want = model_.layer_input_shapes[split];
    bool ok = shape.size() == want.size() + 1;
    for (size_t i = 0; ok && i < want.size(); ++i) ok = shape[i + 1] == want[i];
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("tensor shape ", ShapeString(shape),
                                                     " does not match the input of layer ", split,
                                                     ": expected [n, ", absl::StrJoin(want, ", "), "]"));
    }
    if (shape[0] < 1 || shape[0] > options_.max_request_samples) {
      return absl::InvalidArgumentError(absl::StrCat("tensor batch dimension is ", shape[0],
                                                     "; this server takes 1..",
                                                     options_.max_request_samples, " samples per request"));
    }
    return absl::OkStatus();
  }

  // Admission control: a place (and its decoded bytes) is held from here
  // until the job leaves the queue, so nothing is allocated for a refused job.
  absl::StatusOr<int64_t> Admit(int split, const std::vector<int64_t>& shape) {
    if (auto s = ValidateShape(split, shape); !s.ok()) return s;
    const int64_t bytes = NumElements(shape) * static_cast<int64_t>(sizeof(float));
    absl::MutexLock lock(&mu_);
    if (!accepting_) return absl::UnavailableError("eenn-server is shutting down");
    if (static_cast<int>(queue_.size()) + admitted_ >= options_.queue_capacity) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "eenn-server queue is full (", options_.queue_capacity, " requests waiting)"));
    }
    if (held_bytes_ + bytes > options_.max_queued_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "eenn-server queue is full: its requests hold ", held_bytes_, " bytes of tensors, this one needs ",
          bytes, " more, the limit is ", options_.max_queued_bytes, " (max_queued_bytes)"));
    }
    ++admitted_;
    held_bytes_ += bytes;
    return bytes;
  }

  // Gives back an admission that was not submitted.
  void Release(int64_t bytes) {
    absl::MutexLock lock(&mu_);
    --admitted_;
    held_bytes_ -= bytes;
  }

  // Queues an admitted job; its admission (`bytes`) passes to the queue entry.
  void Submit(int64_t bytes, ResumeJob job, Callback done) {
    const int n = static_cast<int>(job.shape.empty() ? 0 : job.shape[0]);
    {
      absl::MutexLock lock(&mu_);
      --admitted_;
      if (accepting_) {
        queue_.push_back(Pending{std::move(job), std::move(done), absl::Now(), n, bytes});
        ++version_;
        if (metrics_) metrics_->queue_depth->Set(static_cast<double>(queue_.size()));
        return;
      }
      held_bytes_ -= bytes;
    }
    done(absl::UnavailableError("eenn-server is shutting down"));
  }

  void StopAccepting() {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
  }

  void Shutdown(absl::Duration timeout) {
    std::deque<Pending> left;
    {
      absl::MutexLock lock(&mu_);
      accepting_ = false;
      auto drained = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return queue_.empty() && running_ == 0; };
      mu_.AwaitWithTimeout(absl::Condition(&drained), timeout);
      left.swap(queue_);
      for (const auto& p : left) held_bytes_ -= p.bytes;
      stopping_ = true;
      if (metrics_) metrics_->queue_depth->Set(0);
    }
    for (auto& p : left) p.done(absl::UnavailableError("eenn-server shut down before this request ran"));
    for (auto& t : executors_) t.join();
    executors_.clear();
  }

  LoadSnapshot Load() const {
    absl::MutexLock lock(&mu_);
    double rate = service_rate_;
    if (rate == 0 && window_busy_ > absl::ZeroDuration()) {
      rate = window_samples_ / absl::ToDoubleSeconds(window_busy_);  // the first window, so far
    }
    return LoadSnapshot{static_cast<int>(queue_.size()), options_.queue_capacity, rate};
  }

 private:
  struct Pending {
    ResumeJob job;
    Callback done;
    absl::Time enqueued;
    int samples = 0;
    int64_t bytes = 0;  // its share of held_bytes_
  };

  // Samples queued with `split`.
  int SamplesWithSplit(int split) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int n = 0;
    for (const auto& p : queue_) n += p.job.split_layer == split ? p.samples : 0;
    return n;
  }

  void ExecutorLoop() {
    common::InitComputeThread();
    mu_.Lock();
    while (true) {
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) break;
      // Group commit: hold the oldest job up to max_queue_delay while more
      // jobs with its split arrive, unless the batch is already full.
      const int split = queue_.front().job.split_layer;
      const absl::Time hold_until = queue_.front().enqueued + options_.max_queue_delay;
      while (!stopping_ && SamplesWithSplit(split) < options_.max_batch_size && absl::Now() < hold_until) {
        const uint64_t seen = version_;
        auto changed = [this, seen]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return version_ != seen || stopping_;
        };
        mu_.AwaitWithDeadline(absl::Condition(&changed), hold_until);
      }
      if (stopping_) break;
      if (queue_.empty()) continue;  // another executor took them
      const int take_split = queue_.front().job.split_layer;
      std::vector<Pending> batch;
      int samples = 0;
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->job.split_layer == take_split &&
            (batch.empty() || samples + it->samples <= options_.max_batch_size)) {
          samples += it->samples;
          held_bytes_ -= it->bytes;
          batch.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      if (running_++ == 0) busy_since_ = absl::Now();
      if (metrics_) metrics_->queue_depth->Set(static_cast<double>(queue_.size()));
      mu_.Unlock();
      RunBatch(take_split, batch);
      batch.clear();  // free the jobs' tensors outside the lock
      mu_.Lock();
      AccrueBusy();
      --running_;
    }
    mu_.Unlock();
  }

  // Service rate: the wall-clock time during which at least one executor runs
  // a batch is split into windows of kServiceRateWindow; each window's rate is
  // the samples its forwards completed over its length, so N executors busy
  // together count N times the samples of one.
  void AccrueBusy() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time now = absl::Now();
    window_busy_ += now - busy_since_;
    busy_since_ = now;
  }
  // Called by the executor right after its forward, before the jobs are
  // answered, so that their replies' load already counts it.
  void ForwardDone(int64_t served) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    AccrueBusy();
    window_samples_ += served;
    if (window_busy_ < kServiceRateWindow) return;
    const double rate = window_samples_ / absl::ToDoubleSeconds(window_busy_);
    service_rate_ = service_rate_ == 0 ? rate : 0.5 * service_rate_ + 0.5 * rate;
    window_busy_ = absl::ZeroDuration();
    window_samples_ = 0;
  }

  // Runs one batch and answers its jobs.
  void RunBatch(int split, std::vector<Pending>& batch) {
    const absl::Time start = absl::Now();
    std::vector<Pending*> live;
    int64_t total = 0;
    for (auto& p : batch) {
      if (p.job.deadline <= start) {
        p.done(absl::DeadlineExceededError(absl::StrCat(
            "deadline passed after ", Micros(start - p.enqueued), " us in the eenn-server queue")));
        continue;
      }
      live.push_back(&p);
      total += p.samples;
    }
    if (live.empty()) return;
    std::vector<int64_t> shape = model_.layer_input_shapes[split];
    int64_t per_sample = 1;
    for (int64_t d : shape) per_sample *= d;
    shape.insert(shape.begin(), total);
    absl::StatusOr<common::PartialResult> result;
    try {
      torch::Tensor x;
      if (live.size() == 1) {
        // A batch of one request: run on its decoded values in place (they
        // outlive the forward), no copy.
        x = torch::from_blob(live[0]->job.values.data(), shape, torch::kFloat32);
      } else {
        x = torch::empty(shape, torch::kFloat32);
        float* dst = x.data_ptr<float>();
        for (Pending* p : live) {
          std::memcpy(dst, p->job.values.data(), sizeof(float) * p->samples * per_sample);
          dst += p->samples * per_sample;
        }
      }
      result = bundle_.model->Run(x, split, model_.num_layers, bundle_.policy);
    } catch (const c10::Error& e) {
      result = absl::InternalError(absl::StrCat("model '", model_.name, "' failed at split ", split,
                                                ": ", e.what_without_backtrace()));
    }
    const absl::Time end = absl::Now();
    const int64_t compute_us = Micros(end - start);
    // A failed forward resumed nothing: it counts for neither the rate nor the metrics.
    ForwardDone(result.ok() ? total : 0);
    if (metrics_ && result.ok()) {
      metrics_->batch_size->Observe(static_cast<double>(total));
      metrics_->samples->Increment(static_cast<double>(total));
    }
    int64_t offset = 0;
    for (Pending* p : live) {
      if (!result.ok()) {
        p->done(result.status());
        continue;
      }
      ResumeResult r;
      r.queue_us = Micros(start - p->enqueued);
      r.compute_us = compute_us;
      r.batch_size = static_cast<int>(total);
      for (int i = 0; i < p->samples; ++i) {
        r.predictions.push_back(std::move(result->results[offset + i]));
        if (metrics_) metrics_->ExitTaken(r.predictions.back().exit_layer);
      }
      offset += p->samples;
      if (metrics_) {
        metrics_->queue_seconds->Observe(absl::ToDoubleSeconds(start - p->enqueued));
        metrics_->compute_seconds->Observe(absl::ToDoubleSeconds(end - start));
      }
      p->done(std::move(r));
    }
  }

  common::Bundle bundle_;
  common::ServedModel model_;
  OffloadEngineOptions options_;
  ServerMetrics* metrics_;
  std::vector<std::thread> executors_;

  mutable absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;  // bumped on every enqueue
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int admitted_ ABSL_GUARDED_BY(mu_) = 0;       // admissions not yet submitted
  int64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // decoded bytes of admitted and queued jobs
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time busy_since_ ABSL_GUARDED_BY(mu_);  // while running_ > 0: busy time counted up to here
  absl::Duration window_busy_ ABSL_GUARDED_BY(mu_);
  int64_t window_samples_ ABSL_GUARDED_BY(mu_) = 0;
  double service_rate_ ABSL_GUARDED_BY(mu_) = 0;  // samples/s, smoothed over windows
};

absl::StatusOr<std::unique_ptr<OffloadEngine>> OffloadEngine::Create(const std::string& bundle_dir,
                                                                     const OffloadEngineOptions& given,
                                                                     ServerMetrics* metrics) {
  OffloadEngineOptions options = given;
  if (options.max_request_samples == 0) options.max_request_samples = options.max_batch_size;
  if (options.max_batch_size < 1 || options.queue_capacity < 1 || options.max_request_samples < 1 ||
      options.max_queued_bytes < 1 || options.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "max_batch_size, queue_capacity, max_queued_bytes and max_request_samples must be >= 1 "
        "(max_request_samples 0: max_batch_size) and max_queue_delay >= 0");
  }
  if (options.max_request_samples > options.max_batch_size) {
    // A request is never split across forward passes.
    return absl::InvalidArgumentError(absl::StrCat(
        "max_request_samples (", options.max_request_samples, ") exceeds max_batch_size (",
        options.max_batch_size, "): a request runs in one forward pass, so max_request_samples must be "
        "<= max_batch_size"));
  }
  EENN_ASSIGN_OR_RETURN(common::Bundle bundle, common::LoadBundle(bundle_dir));
  auto impl = std::make_unique<Impl>(std::move(bundle), options, metrics);
  const common::ServedModel& m = impl->model();
  for (int split = 0; split < m.num_layers; ++split) {
    const int64_t largest = options.max_request_samples * NumElements(m.layer_input_shapes[split]) *
                            static_cast<int64_t>(sizeof(float));
    if (largest > options.max_queued_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_queued_bytes (", options.max_queued_bytes, ") is below one request of max_request_samples (",
          options.max_request_samples, ") samples at split ", split, " (", largest,
          " bytes decoded): such requests would always be refused"));
    }
  }
  if (options.warmup) EENN_RETURN_IF_ERROR(impl->Warmup());
  impl->Start();
  return std::unique_ptr<OffloadEngine>(new OffloadEngine(std::move(impl)));
}

OffloadEngine::OffloadEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OffloadEngine::~OffloadEngine() = default;
const common::ServedModel& OffloadEngine::model() const { return impl_->model(); }
const OffloadEngineOptions& OffloadEngine::options() const { return impl_->options(); }
absl::Status OffloadEngine::ValidateShape(int split, const std::vector<int64_t>& shape) const {
  return impl_->ValidateShape(split, shape);
}
absl::StatusOr<OffloadEngine::Admission> OffloadEngine::Admit(int split, const std::vector<int64_t>& shape) {
  EENN_ASSIGN_OR_RETURN(const int64_t bytes, impl_->Admit(split, shape));
  Admission a;
  a.impl_ = impl_.get();
  a.bytes_ = bytes;
  return a;
}
void OffloadEngine::Submit(Admission admission, ResumeJob job, Callback done) {
  if (admission.impl_ != impl_.get()) {
    done(absl::FailedPreconditionError("job submitted without an admission from this engine"));
    return;
  }
  admission.impl_ = nullptr;  // its place passes to the queue entry
  impl_->Submit(admission.bytes_, std::move(job), std::move(done));
}
void OffloadEngine::Submit(ResumeJob job, Callback done) {
  auto admission = Admit(job.split_layer, job.shape);
  if (!admission.ok()) {
    done(admission.status());
    return;
  }
  Submit(std::move(*admission), std::move(job), std::move(done));
}

OffloadEngine::Admission::Admission(Admission&& other) noexcept
    : impl_(std::exchange(other.impl_, nullptr)), bytes_(other.bytes_) {}
OffloadEngine::Admission& OffloadEngine::Admission::operator=(Admission&& other) noexcept {
  if (this != &other) {
    Release();
    impl_ = std::exchange(other.impl_, nullptr);
    bytes_ = other.bytes_;
  }
  return *this;
}
OffloadEngine::Admission::~Admission() { Release(); }
void OffloadEngine::Admission::Release() {
  if (impl_) std::exchange(impl_, nullptr)->Release(bytes_);
}
void OffloadEngine::StopAccepting() { impl_->StopAccepting(); }
void OffloadEngine::Shutdown(absl::Duration timeout) { impl_->Shutdown(timeout); }
LoadSnapshot OffloadEngine::Load() const { return impl_->Load(); }

}  // namespace eenn::server
