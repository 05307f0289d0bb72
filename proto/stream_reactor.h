// A server-side bidirectional stream where each request message is handled
// like its own unary call: the handler answers asynchronously, replies are
// written one at a time in completion order (so possibly out of request
// order; callers match request_id), and a failed message is answered with an
// error reply while the stream carries on. The stream finishes with OK once
// the client half-closes and every handled message has been answered (or the
// client went away).
//
// Lifetime: heap-allocated by the service method, deletes itself in OnDone().
// Thread-safety: handlers may complete on any thread.
#ifndef EENN_PROTO_STREAM_REACTOR_H_
#define EENN_PROTO_STREAM_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace eenn::wire {

template <typename Req, typename Reply>
class PerMessageStreamReactor final : public grpc::ServerBidiReactor<Req, Reply> {
 public:
  using Done = std::function<void(const absl::Status&, Reply&&)>;
  // Handles one message; must call `done` exactly once, from any thread.
  using Handler = std::function<void(const Req&, Done)>;
  // Turns a failed message into its error reply.
  using ErrorReply = std::function<Reply(const std::string& request_id, const absl::Status&)>;

  PerMessageStreamReactor(Handler handler, ErrorReply error_reply)
      : handler_(std::move(handler)), error_reply_(std::move(error_reply)) {
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool finish;
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
        finish = ShouldFinishLocked();
      }
      if (finish) this->Finish(grpc::Status::OK);
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      ++pending_;
    }
    handler_(request_, [this, id = request_.request_id()](const absl::Status& s, Reply&& reply) {
      Enqueue(s.ok() ? std::move(reply) : error_reply_(id, s));
    });
    this->StartRead(&request_);  // the handler copied what it needs
  }

  void OnWriteDone(bool ok) override {
    const Reply* next = nullptr;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      writes_.pop_front();
      if (!ok) {
        broken_ = true;
        writes_.clear();
      }
      writing_ = !writes_.empty();
      // The element stays put (a deque's push_back moves no element) and is
      // popped only here, after its write; the deque itself is read only
      // under the lock, since other threads append to it.
      if (writing_) next = &writes_.front();
      finish = !writing_ && ShouldFinishLocked();
    }
    if (next) this->StartWrite(next);
    if (finish) this->Finish(grpc::Status::OK);
  }

  void OnDone() override { delete this; }

 private:
  void Enqueue(Reply&& reply) {
    const Reply* next = nullptr;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      --pending_;
      if (!broken_) {
        writes_.push_back(std::move(reply));
        if (!writing_) {
          writing_ = true;
          next = &writes_.front();  // stays put while writing_ (see OnWriteDone)
        }
      }
      finish = !writing_ && ShouldFinishLocked();
    }
    if (next) this->StartWrite(next);
    if (finish) this->Finish(grpc::Status::OK);
  }

  bool ShouldFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_ || pending_ > 0 || writing_) return false;
    finished_ = true;
    return true;
  }

  Handler handler_;
  ErrorReply error_reply_;
  Req request_;  // only touched between StartRead and OnReadDone
  absl::Mutex mu_;
  std::deque<Reply> writes_ ABSL_GUARDED_BY(mu_);
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace eenn::wire

#endif  // EENN_PROTO_STREAM_REACTOR_H_
