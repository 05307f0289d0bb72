// Conversions between eenn.v1 messages and eenn's domain types, plus the one
// absl::Status <-> grpc::Status mapping every service and client uses.
#ifndef EENN_PROTO_WIRE_H_
#define EENN_PROTO_WIRE_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/manifest.h"
#include "common/tensor_codec.h"
#include "proto/eenn.pb.h"

namespace eenn::wire {

// Moves the encoded bytes into `out`.
void ToProto(common::EncodedTensor&& t, v1::Tensor* out);

// A view of `t` (its bytes stay in the message). InvalidArgument when dtype,
// encoding or compression are unspecified or unknown.
absl::StatusOr<common::EncodedTensorView> FromProto(const v1::Tensor& t);

// The model fields of ModelInfo (the daemon-specific split and load are left alone).
void ToProto(const common::ServedModel& m, v1::ModelInfo* out);

// A stream message's per-message failure.
void ToProto(const absl::Status& s, v1::Error* out);

// The call's deadline (InfiniteFuture when the client set none).
absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx);

grpc::Status ToGrpc(const absl::Status& s);
absl::Status FromGrpc(const grpc::Status& s);

// The canonical code name, e.g. "RESOURCE_EXHAUSTED" (metrics labels, messages).
const char* CodeName(absl::StatusCode code);

}  // namespace eenn::wire

#endif  // EENN_PROTO_WIRE_H_
