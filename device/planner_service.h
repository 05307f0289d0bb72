// eenn.v1.PlannerService on eenn-device: the live planner's current plan, or
// the plan for hypothetical link conditions, and the load controller's state.
#ifndef EENN_DEVICE_PLANNER_SERVICE_H_
#define EENN_DEVICE_PLANNER_SERVICE_H_

#include "device/load_control.h"
#include "device/split_planner.h"
#include "proto/eenn.grpc.pb.h"

namespace eenn::device {

class PlannerServiceImpl final : public v1::PlannerService::CallbackService {
 public:
  // Either may be null (not both); they must outlive the service.
  explicit PlannerServiceImpl(SplitPlanner* planner, LoadControl* control = nullptr)
      : planner_(planner), control_(control) {}

  grpc::ServerUnaryReactor* GetPlan(grpc::CallbackServerContext* ctx, const v1::PlanRequest* req,
                                    v1::PlanReply* reply) override;

 private:
  SplitPlanner* planner_;
  LoadControl* control_;
};

// The reply for a snapshot (also used by eenn-plan's tests).
void ToProto(const PlanSnapshot& snap, v1::PlanReply* reply);
void ToProto(const LoadControlSnapshot& snap, v1::LoadControlState* state);

}  // namespace eenn::device

#endif  // EENN_DEVICE_PLANNER_SERVICE_H_
