// eenn.v1.OffloadService over gRPC's callback API: validates each Resume
// request (model, version, split, tensor), holds a place in the engine's
// queue, decodes its tensor, hands the job to the OffloadEngine and answers
// when the engine calls back. No LibTorch
// here; the reactor never blocks on inference.
//
// Errors: FAILED_PRECONDITION for a model name/version the server does not
// serve; INVALID_ARGUMENT for a bad split, shape, dtype, encoding or byte
// count; RESOURCE_EXHAUSTED when the queue is full (requests or decoded
// bytes; such a request is not decoded); UNAVAILABLE while
// draining; DEADLINE_EXCEEDED when the caller's deadline passed in the queue;
// INTERNAL for a model failure.
//
// Thread-safety: gRPC calls the handlers from its threads; the service holds
// no mutable state of its own.
#ifndef EENN_SERVER_OFFLOAD_SERVICE_H_
#define EENN_SERVER_OFFLOAD_SERVICE_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/eenn.grpc.pb.h"
#include "server/offload_engine.h"

namespace eenn::server {

class ServerMetrics;

class OffloadServiceImpl final : public v1::OffloadService::CallbackService {
 public:
  // Both must outlive the service; metrics may be null.
  OffloadServiceImpl(OffloadEngine* engine, ServerMetrics* metrics)
      : engine_(engine), metrics_(metrics) {}

  grpc::ServerUnaryReactor* Resume(grpc::CallbackServerContext* ctx, const v1::ResumeRequest* req,
                                   v1::ResumeReply* reply) override;
  grpc::ServerBidiReactor<v1::ResumeRequest, v1::ResumeReply>* ResumeStream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::ModelInfoRequest* req, v1::ModelInfo* reply) override;
  grpc::ServerUnaryReactor* Probe(grpc::CallbackServerContext* ctx, const v1::ProbeRequest* req,
                                  v1::ProbeReply* reply) override;

  // Validates `req` (model, split, shape, declared byte counts), holds a
  // place in the engine's queue for it (RESOURCE_EXHAUSTED / UNAVAILABLE from
  // OffloadEngine::Admit) and only then decodes its tensor into a job, so a
  // refused or inconsistent request allocates nothing (public for tests).
  struct Decoded {
    ResumeJob job;
    OffloadEngine::Admission admission;  // pass to OffloadEngine::Submit
  };
  absl::StatusOr<Decoded> Decode(const v1::ResumeRequest& req) const;

  // The shared path of both RPC forms: `done` runs exactly once with the
  // status and, when OK, the filled reply.
  using Done = std::function<void(const absl::Status&, v1::ResumeReply&&)>;
  void Handle(const v1::ResumeRequest& req, absl::Time deadline, Done done);

 private:
  OffloadEngine* engine_;
  ServerMetrics* metrics_;
};

}  // namespace eenn::server

#endif  // EENN_SERVER_OFFLOAD_SERVICE_H_
