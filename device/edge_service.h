// eenn.v1.EdgeService over gRPC's callback API: turns each Classify request
// into a ClassifyInput for the EdgeEngine and its outcome into a reply. No
// LibTorch or OpenCV calls here; the reactor never blocks on inference.
//
// Thread-safety: stateless beyond the engine pointer.
#ifndef EENN_DEVICE_EDGE_SERVICE_H_
#define EENN_DEVICE_EDGE_SERVICE_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "device/edge_engine.h"
#include "device/metrics.h"
#include "proto/eenn.grpc.pb.h"

namespace eenn::device {

class EdgeServiceImpl final : public v1::EdgeService::CallbackService {
 public:
  // `metrics` (may be null) counts the requests refused here, before the engine.
  explicit EdgeServiceImpl(EdgeEngine* engine, DeviceMetrics* metrics = nullptr)
      : engine_(engine), metrics_(metrics) {}

  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* ctx, const v1::ClassifyRequest* req,
                                     v1::ClassifyReply* reply) override;
  grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyReply>* ClassifyStream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx, const v1::ModelInfoRequest* req,
                                         v1::ModelInfo* reply) override;

  using Done = std::function<void(const absl::Status&, v1::ClassifyReply&&)>;
  void Handle(const v1::ClassifyRequest& req, absl::Time deadline, Done done);

 private:
  void Refuse(const absl::Status& s, const Done& done);

  EdgeEngine* engine_;
  DeviceMetrics* metrics_;
};

// The reply for an outcome.
void ToProto(const ClassifyOutcome& o, v1::ClassifyReply* reply);

}  // namespace eenn::device

#endif  // EENN_DEVICE_EDGE_SERVICE_H_
