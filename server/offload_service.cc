#include "server/offload_service.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "proto/stream_reactor.h"
#include "proto/wire.h"
#include "server/metrics.h"

namespace eenn::server {
namespace {

void FillLoad(const LoadSnapshot& l, v1::ServerLoad* out) {
  out->set_queue_depth(l.queue_depth);
  out->set_queue_capacity(l.queue_capacity);
  out->set_service_rate(l.service_rate);
}

}  // namespace

absl::StatusOr<OffloadServiceImpl::Decoded> OffloadServiceImpl::Decode(const v1::ResumeRequest& req) const {
  const common::ServedModel& m = engine_->model();
  if (req.model_name() != m.name || req.model_version() != m.version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this eenn-server serves model '", m.name, "' version '", m.version, "'; the request is for '",
        req.model_name(), "' version '", req.model_version(), "'"));
  }
  if (!req.has_tensor()) return absl::InvalidArgumentError("request has no tensor");
  auto view = wire::FromProto(req.tensor());
  if (!view.ok()) return view.status();
  if (auto s = engine_->ValidateShape(req.split_layer(), view->shape); !s.ok()) return s;
  // ValidateShape bounded the element count. The byte counts the request
  // declares must agree with it before anything is allocated.
  int64_t n = 1;
  for (int64_t d : view->shape) n *= d;
  if (auto s = common::CheckEncodedSize(*view, n); !s.ok()) return s;
  // A place in the queue before decoding: a request the queue refuses is not decoded.
  auto admission = engine_->Admit(req.split_layer(), view->shape);
  if (!admission.ok()) return admission.status();
  Decoded d{ResumeJob(), std::move(*admission)};
  d.job.split_layer = req.split_layer();
  d.job.shape = view->shape;
  d.job.values.resize(static_cast<size_t>(n));
  // Decode checks the compression frame and the values.
  if (auto s = common::DecodeTensor(*view, n, d.job.values.data(), n); !s.ok()) return s;
  return d;
}

void OffloadServiceImpl::Handle(const v1::ResumeRequest& req, absl::Time deadline, Done done) {
  const absl::Time t0 = absl::Now();
  const size_t request_bytes = req.ByteSizeLong();
  if (metrics_) metrics_->received_bytes->Increment(static_cast<double>(request_bytes));
  auto decoded = Decode(req);
  const absl::Time t1 = absl::Now();
  if (metrics_) metrics_->decode_seconds->Observe(absl::ToDoubleSeconds(t1 - t0));
  if (!decoded.ok()) {
    if (metrics_) metrics_->RequestDone(decoded.status().code());
    done(decoded.status(), v1::ResumeReply());
    return;
  }
  decoded->job.deadline = deadline;
  engine_->Submit(std::move(decoded->admission), std::move(decoded->job), [this, id = req.request_id(), t0, t1,
                                    done = std::move(done)](absl::StatusOr<ResumeResult> r) {
    v1::ResumeReply reply;
    if (r.ok()) {
      reply.set_request_id(id);
      for (const auto& p : r->predictions) {
        auto* out = reply.add_predictions();
        out->set_class_id(p.class_id);
        out->set_confidence(p.confidence);
        out->set_exit_layer(p.exit_layer);
        for (float c : p.confidences) out->add_exit_confidences(c);
      }
      auto* t = reply.mutable_timings();
      t->set_decode_us(absl::ToInt64Microseconds(t1 - t0));
      t->set_queue_us(r->queue_us);
      t->set_compute_us(r->compute_us);
      t->set_batch_size(r->batch_size);
      FillLoad(engine_->Load(), reply.mutable_load());
    }
    if (metrics_) {
      metrics_->RequestDone(r.status().code());
      metrics_->total_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - t0));
      if (r.ok()) metrics_->sent_bytes->Increment(static_cast<double>(reply.ByteSizeLong()));
    }
    done(r.status(), std::move(reply));
  });
}

grpc::ServerUnaryReactor* OffloadServiceImpl::Resume(grpc::CallbackServerContext* ctx,
                                                     const v1::ResumeRequest* req,
                                                     v1::ResumeReply* reply) {
  auto* reactor = ctx->DefaultReactor();
  Handle(*req, wire::DeadlineOf(ctx), [reactor, reply](const absl::Status& s, v1::ResumeReply&& r) {
    if (s.ok()) *reply = std::move(r);
    reactor->Finish(wire::ToGrpc(s));
  });
  return reactor;
}

grpc::ServerBidiReactor<v1::ResumeRequest, v1::ResumeReply>* OffloadServiceImpl::ResumeStream(
    grpc::CallbackServerContext* ctx) {
  const absl::Time deadline = wire::DeadlineOf(ctx);
  return new wire::PerMessageStreamReactor<v1::ResumeRequest, v1::ResumeReply>(
      [this, deadline](const v1::ResumeRequest& req, auto done) { Handle(req, deadline, std::move(done)); },
      [](const std::string& id, const absl::Status& s) {
        v1::ResumeReply reply;
        reply.set_request_id(id);
        wire::ToProto(s, reply.mutable_error());
        return reply;
      });
}

grpc::ServerUnaryReactor* OffloadServiceImpl::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                           const v1::ModelInfoRequest*,
                                                           v1::ModelInfo* reply) {
  wire::ToProto(engine_->model(), reply);
  FillLoad(engine_->Load(), reply->mutable_load());
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* OffloadServiceImpl::Probe(grpc::CallbackServerContext* ctx,
                                                    const v1::ProbeRequest* req, v1::ProbeReply* reply) {
  reply->set_received_bytes(static_cast<int64_t>(req->padding().size()));
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace eenn::server
