// eenn.v1.PlannerService on eenn-device: the live planner's current plan, or
// the plan for hypothetical link conditions.
#ifndef EENN_DEVICE_PLANNER_SERVICE_H_
#define EENN_DEVICE_PLANNER_SERVICE_H_

#include "device/split_planner.h"
#include "proto/eenn.grpc.pb.h"

namespace eenn::device {

class PlannerServiceImpl final : public v1::PlannerService::CallbackService {
 public:
  // `planner` must outlive the service.
  explicit PlannerServiceImpl(SplitPlanner* planner) : planner_(planner) {}

  grpc::ServerUnaryReactor* GetPlan(grpc::CallbackServerContext* ctx, const v1::PlanRequest* req,
                                    v1::PlanReply* reply) override;

 private:
  SplitPlanner* planner_;
};

// The reply for a snapshot (also used by eenn-plan's tests).
void ToProto(const PlanSnapshot& snap, v1::PlanReply* reply);

}  // namespace eenn::device

#endif  // EENN_DEVICE_PLANNER_SERVICE_H_
