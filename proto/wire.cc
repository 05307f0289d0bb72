#include "proto/wire.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace eenn::wire {

void ToProto(common::EncodedTensor&& t, v1::Tensor* out) {
  out->set_dtype(v1::DTYPE_FLOAT32);
  out->clear_shape();
  for (int64_t d : t.shape) out->add_shape(d);
  out->set_encoding(static_cast<v1::Encoding>(static_cast<int>(t.encoding)));
  out->set_scale(t.scale);
  out->set_zero_point(t.zero_point);
  out->set_compression(t.compression == common::WireCompression::kZstd ? v1::COMPRESSION_ZSTD
                                                                        : v1::COMPRESSION_NONE);
  out->set_encoded_size(t.encoded_size);
  out->set_data(std::move(t.data));
}

absl::StatusOr<common::EncodedTensorView> FromProto(const v1::Tensor& t) {
  if (t.dtype() != v1::DTYPE_FLOAT32) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor dtype ", t.dtype(), " is not supported (only DTYPE_FLOAT32)"));
  }
  common::EncodedTensorView v;
  switch (t.encoding()) {
    case v1::ENCODING_FP32: v.encoding = common::WireEncoding::kFp32; break;
    case v1::ENCODING_FP16: v.encoding = common::WireEncoding::kFp16; break;
    case v1::ENCODING_INT8: v.encoding = common::WireEncoding::kInt8; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tensor encoding ", t.encoding(), " is unknown (fp32, fp16 or int8)"));
  }
  switch (t.compression()) {
    case v1::COMPRESSION_NONE: v.compression = common::WireCompression::kNone; break;
    case v1::COMPRESSION_ZSTD: v.compression = common::WireCompression::kZstd; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tensor compression ", t.compression(), " is unknown (none or zstd)"));
  }
  v.shape.assign(t.shape().begin(), t.shape().end());
  v.scale = t.scale();
  v.zero_point = t.zero_point();
  v.encoded_size = t.encoded_size();
  v.data = t.data();
  return v;
}

void ToProto(const common::ServedModel& m, v1::ModelInfo* out) {
  out->set_model_name(m.name);
  out->set_model_version(m.version);
  out->set_architecture(m.architecture);
  out->set_num_layers(m.num_layers);
  for (int l : m.exit_layers) out->add_exit_layers(l);
  for (float t : m.thresholds) out->add_thresholds(t);
  for (const auto& c : m.class_names) out->add_class_names(c);
  for (int64_t d : m.input_shape) out->add_input_shape(d);
  out->set_weights_sha256(m.weights_sha256);
}

void ToProto(const absl::Status& s, v1::Error* out) {
  out->set_code(static_cast<int>(s.code()));
  out->set_message(std::string(s.message()));
}

absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx) {
  const auto d = ctx->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code())),
                      std::string(s.message()));
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(static_cast<int>(s.error_code())),
                      s.error_message());
}

const char* CodeName(absl::StatusCode code) {
  static const char* kNames[17] = {
      "OK",       "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  return c >= 0 && c < 17 ? kNames[c] : "UNKNOWN";
}

}  // namespace eenn::wire
