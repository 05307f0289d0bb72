// Local input sources of eenn-device: a folder of images, a video file or a
// camera, read through OpenCV and classified through the same EdgeEngine as
// gRPC requests. Each answer is written as one JSON line.
#ifndef EENN_DEVICE_SOURCE_H_
#define EENN_DEVICE_SOURCE_H_

#include <atomic>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "device/edge_engine.h"

namespace eenn::device {

struct SourceOptions {
  // "folder:PATH" (images, recursively, sorted), "video:PATH" or "camera:INDEX".
  std::string spec;
  int64_t max_items = 0;  // stop after this many (0 = until the source ends)
};

struct SourceReport {
  int64_t items = 0;     // read from the source
  int64_t answered = 0;  // classified
  int64_t failed = 0;    // refused or failed (logged)
};

// Reads the source until it ends, `stop` turns true or max_items, classifying
// each item synchronously and writing {"source","index","class","class_name",
// "confidence","exit_layer","decided","total_us"} lines to `out`.
// InvalidArgument for a malformed spec; NotFound when it cannot be opened.
absl::StatusOr<SourceReport> RunSource(const SourceOptions& options, EdgeEngine* engine, std::ostream& out,
                                       const std::atomic<bool>& stop);

}  // namespace eenn::device

#endif  // EENN_DEVICE_SOURCE_H_
