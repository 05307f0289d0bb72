// Fuzz target: the wire tensor decoder. The input is a serialized eenn.v1.Tensor
// as a Resume request carries it; it goes through the same path as the server's
// (wire::FromProto, then DecodeTensor with a bounded element count). Whatever
// the bytes, the decoder must either refuse with InvalidArgument or produce
// exactly the declared element count of finite values, and a decoded fp32
// tensor must re-encode to the same bytes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/tensor_codec.h"
#include "proto/eenn.pb.h"
#include "proto/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eenn::v1::Tensor proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto view = eenn::wire::FromProto(proto);
  if (!view.ok()) {
    if (view.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  constexpr int64_t kMaxElements = int64_t{1} << 20;
  auto decoded = eenn::common::DecodeTensor(*view, kMaxElements);
  if (!decoded.ok()) {
    if (decoded.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  auto n = eenn::common::CheckedNumElements(view->shape, kMaxElements);
  if (!n.ok() || static_cast<int64_t>(decoded->size()) != *n) std::abort();
  for (float v : *decoded) {
    if (!std::isfinite(v)) std::abort();
  }
  if (view->encoding == eenn::common::WireEncoding::kFp32 &&
      view->compression == eenn::common::WireCompression::kNone) {
    auto again = eenn::common::EncodeTensor(decoded->data(), view->shape, {});
    if (!again.ok() || again->data != view->data) std::abort();
  }
  return 0;
}
