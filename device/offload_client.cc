#include "device/offload_client.h"

#include <algorithm>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "proto/eenn.grpc.pb.h"
#include "proto/wire.h"

namespace eenn::device {
namespace {

class GrpcOffloadClient final : public OffloadClient {
 public:
  GrpcOffloadClient(const GrpcOffloadClientOptions& o, grpc::ChannelArguments args,
                    std::shared_ptr<grpc::ChannelCredentials> credentials)
      : target_(o.target) {
    args.SetMaxReceiveMessageSize(o.max_message_bytes);
    args.SetMaxSendMessageSize(o.max_message_bytes);
    // Reconnect quickly after a server restart.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    channel_ = grpc::CreateCustomChannel(o.target, std::move(credentials), args);
    stub_ = v1::OffloadService::NewStub(channel_);
  }

  absl::StatusOr<ResumeAnswer> Resume(ResumeCall call, absl::Duration timeout) override {
    v1::ResumeRequest req;
    req.set_request_id(call.request_id);
    req.set_model_name(call.model_name);
    req.set_model_version(call.model_version);
    req.set_split_layer(call.split_layer);
    wire::ToProto(std::move(call.tensor), req.mutable_tensor());
    v1::ResumeReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    grpc::Status s = stub_->Resume(&ctx, req, &reply);
    if (!s.ok()) return wire::FromGrpc(s);
    ResumeAnswer a;
    a.request_bytes = static_cast<int64_t>(req.ByteSizeLong());
    a.reply_bytes = static_cast<int64_t>(reply.ByteSizeLong());
    a.server_queue_us = reply.timings().queue_us();
    a.server_compute_us = reply.timings().compute_us();
    a.server_queue_depth = reply.load().queue_depth();
    a.server_queue_capacity = reply.load().queue_capacity();
    for (const auto& p : reply.predictions()) {
      common::ExitResult r;
      r.class_id = p.class_id();
      r.confidence = p.confidence();
      r.exit_layer = p.exit_layer();
      r.confidences.assign(p.exit_confidences().begin(), p.exit_confidences().end());
      a.predictions.push_back(std::move(r));
    }
    const int64_t n = req.tensor().shape_size() > 0 ? req.tensor().shape(0) : 0;
    if (static_cast<int64_t>(a.predictions.size()) != n) {
      return absl::InternalError(absl::StrCat("eenn-server answered ", a.predictions.size(),
                                              " predictions for ", n, " samples"));
    }
    return a;
  }

  absl::StatusOr<RemoteModel> GetModelInfo(absl::Duration timeout) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::ModelInfo info;
    grpc::Status s = stub_->GetModelInfo(&ctx, v1::ModelInfoRequest(), &info);
    if (!s.ok()) return wire::FromGrpc(s);
    return RemoteModel{info.model_name(), info.model_version(), info.weights_sha256(), info.num_layers()};
  }

  absl::StatusOr<int64_t> Probe(int64_t padding_bytes, absl::Duration timeout) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::ProbeRequest req;
    req.mutable_padding()->resize(static_cast<size_t>(std::max<int64_t>(0, padding_bytes)), '\x5a');
    v1::ProbeReply reply;
    grpc::Status s = stub_->Probe(&ctx, req, &reply);
    if (!s.ok()) return wire::FromGrpc(s);
    return static_cast<int64_t>(req.ByteSizeLong());
  }

  std::string target() const override { return target_; }

 private:
  std::string target_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::OffloadService::Stub> stub_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<OffloadClient>> MakeGrpcOffloadClient(const GrpcOffloadClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("offload server address is empty");
  grpc::ChannelArguments args;
  auto credentials = common::MakeChannelCredentials(options.tls, &args);
  if (!credentials.ok()) return credentials.status();
  return std::unique_ptr<OffloadClient>(new GrpcOffloadClient(options, std::move(args), *std::move(credentials)));
}

}  // namespace eenn::device
