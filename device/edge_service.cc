#include "device/edge_service.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/stream_reactor.h"
#include "proto/wire.h"

namespace eenn::device {
void ToProto(const ClassifyOutcome& o, v1::ClassifyReply* reply) {
  reply->set_request_id(o.request_id);
  reply->set_class_id(o.result.class_id);
  reply->set_class_name(o.class_name);
  reply->set_confidence(o.result.confidence);
  reply->set_exit_layer(o.result.exit_layer);
  reply->set_decided(static_cast<v1::Decision>(static_cast<int>(o.decided)));
  for (float c : o.result.confidences) reply->add_exit_confidences(c);
  auto* t = reply->mutable_timings();
  t->set_queue_us(o.timings.queue_us);
  t->set_preprocess_us(o.timings.preprocess_us);
  t->set_device_compute_us(o.timings.device_compute_us);
  t->set_encode_us(o.timings.encode_us);
  t->set_offload_us(o.timings.offload_us);
  t->set_server_queue_us(o.timings.server_queue_us);
  t->set_server_compute_us(o.timings.server_compute_us);
  t->set_fallback_us(o.timings.fallback_us);
  t->set_total_us(o.timings.total_us);
  reply->set_offload_bytes(o.offload_bytes);
  reply->set_split_layer(o.split_layer);
  reply->set_fallback_reason(o.fallback_reason);
}

void EdgeServiceImpl::Refuse(const absl::Status& s, const Done& done) {
  if (metrics_) metrics_->RequestDone("failed", s.code());
  done(s, v1::ClassifyReply());
}

void EdgeServiceImpl::Handle(const v1::ClassifyRequest& req, absl::Time deadline, Done done) {
  ClassifyInput in;
  in.request_id = req.request_id();
  in.deadline = deadline;
  if (req.has_split_layer()) in.split_layer = req.split_layer();
  switch (req.input_case()) {
    case v1::ClassifyRequest::kImage:
      if (req.image().empty()) {
        Refuse(absl::InvalidArgumentError("image is empty"), done);
        return;
      }
      in.image_bytes = req.image();
      break;
    case v1::ClassifyRequest::kTensor: {
      auto view = wire::FromProto(req.tensor());
      if (!view.ok()) {
        Refuse(view.status(), done);
        return;
      }
      common::EncodedTensor t;
      t.shape = view->shape;
      t.encoding = view->encoding;
      t.scale = view->scale;
      t.zero_point = view->zero_point;
      t.compression = view->compression;
      t.encoded_size = view->encoded_size;
      t.data = std::string(view->data);
      in.tensor = std::move(t);
      break;
    }
    default:
      Refuse(absl::InvalidArgumentError("request has no input (set image or tensor)"), done);
      return;
  }
  engine_->Submit(std::move(in), [done = std::move(done)](absl::StatusOr<ClassifyOutcome> r) {
    v1::ClassifyReply reply;
    if (r.ok()) ToProto(*r, &reply);
    done(r.status(), std::move(reply));
  });
}

grpc::ServerUnaryReactor* EdgeServiceImpl::Classify(grpc::CallbackServerContext* ctx,
                                                    const v1::ClassifyRequest* req, v1::ClassifyReply* reply) {
  auto* reactor = ctx->DefaultReactor();
  Handle(*req, wire::DeadlineOf(ctx), [reactor, reply](const absl::Status& s, v1::ClassifyReply&& r) {
    if (s.ok()) *reply = std::move(r);
    reactor->Finish(wire::ToGrpc(s));
  });
  return reactor;
}

grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyReply>* EdgeServiceImpl::ClassifyStream(
    grpc::CallbackServerContext* ctx) {
  const absl::Time deadline = wire::DeadlineOf(ctx);
  return new wire::PerMessageStreamReactor<v1::ClassifyRequest, v1::ClassifyReply>(
      [this, deadline](const v1::ClassifyRequest& req, auto done) { Handle(req, deadline, std::move(done)); },
      [](const std::string& id, const absl::Status& s) {
        v1::ClassifyReply reply;
        reply.set_request_id(id);
        wire::ToProto(s, reply.mutable_error());
        return reply;
      });
}

grpc::ServerUnaryReactor* EdgeServiceImpl::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                        const v1::ModelInfoRequest*, v1::ModelInfo* reply) {
  wire::ToProto(engine_->model(), reply);
  reply->set_split_layer(engine_->split_layer());
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace eenn::device
