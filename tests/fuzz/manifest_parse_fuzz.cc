// Fuzz target: the bundle manifest parser (manifest.json). Any text must be
// refused with InvalidArgument or parse into a manifest that serializes and
// parses back to the same manifest.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = eenn::common::ParseManifest(text);
  if (!m.ok()) {
    if (m.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  const std::string once = eenn::common::SerializeManifest(*m);
  auto again = eenn::common::ParseManifest(once);
  if (!again.ok()) std::abort();
  if (eenn::common::SerializeManifest(*again) != once) std::abort();
  return 0;
}
