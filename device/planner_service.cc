#include "device/planner_service.h"

#include <cmath>
#include <optional>

#include "proto/wire.h"

namespace eenn::device {

void ToProto(const PlanSnapshot& snap, v1::PlanReply* reply) {
  reply->set_best_split(snap.plan.best_split);
  reply->set_current_split(snap.current_split);
  reply->set_bandwidth_mbps(snap.plan.link.bandwidth_mbps);
  reply->set_rtt_ms(snap.plan.link.rtt_ms);
  reply->set_server_speed_factor(snap.server_speed_factor);
  reply->set_server_queue_ms(snap.server_queue_ms);
  reply->set_wire(snap.plan.wire);
  reply->set_objective(common::PlanObjectiveName(snap.plan.objective));
  reply->set_hypothetical(snap.hypothetical);
  reply->set_round_trips(snap.round_trips);
  for (const auto& c : snap.plan.candidates) {
    v1::PlanCandidate* p = reply->add_candidates();
    p->set_split(c.split);
    p->set_expected_ms(c.expected_ms);
    p->set_bytes(c.bytes);
    p->set_offload_share(c.offload_share);
    p->set_device_ms(c.device_ms);
    p->set_link_ms(c.link_ms);
    p->set_server_ms(c.server_ms);
  }
}

void ToProto(const LoadControlSnapshot& snap, v1::LoadControlState* state) {
  const common::ControllerState& s = snap.state;
  state->set_config(s.config);
  state->set_num_configs(snap.num_configs);
  state->set_split(snap.config.split);
  for (float t : snap.config.thresholds) state->add_thresholds(t);
  state->set_expected_accuracy(snap.config.accuracy);
  state->set_device_ms(snap.config.device_ms);
  state->set_offload_share(snap.config.offload_share);
  state->set_loss_target(snap.loss_target);
  state->set_predicted_loss(s.predicted_loss);
  state->set_arrival_rate(s.arrival_rate);
  state->set_rate_used(s.rate_used);
  state->set_queue_length(s.queue_length);
  state->set_speed_factor(s.speed_factor);
  if (s.config < static_cast<int>(s.predictions.size())) state->set_service_ms(s.predictions[s.config].service_mean_ms);
  state->set_changes(s.changes);
}

grpc::ServerUnaryReactor* PlannerServiceImpl::GetPlan(grpc::CallbackServerContext* ctx, const v1::PlanRequest* req,
                                                      v1::PlanReply* reply) {
  auto* reactor = ctx->DefaultReactor();
  std::optional<double> bw, rtt;
  if (req->has_bandwidth_mbps()) bw = req->bandwidth_mbps();
  if (req->has_rtt_ms()) rtt = req->rtt_ms();
  if (planner_ != nullptr) {
    auto snap = planner_->Query(bw, rtt);
    if (!snap.ok()) {
      reactor->Finish(wire::ToGrpc(snap.status()));
      return reactor;
    }
    ToProto(*snap, reply);
  } else if (bw || rtt) {
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                 "live split planning is off (eenn-device --device_profile): no hypothetical plans"));
    return reactor;
  }
  if (control_ != nullptr) {
    const LoadControlSnapshot snap = control_->State();
    ToProto(snap, reply->mutable_load_control());
    if (planner_ == nullptr) {
      reply->set_best_split(snap.config.split);
      reply->set_current_split(snap.config.split);
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace eenn::device
