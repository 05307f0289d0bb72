#include "device/source.h"

#include <nlohmann/json.hpp>
#include <opencv2/videoio.hpp>

#include <functional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "common/image.h"

namespace eenn::device {
namespace {

void Emit(std::ostream& out, const std::string& source, int64_t index,
          const absl::StatusOr<ClassifyOutcome>& r, SourceReport& report) {
  nlohmann::json j = {{"source", source}, {"index", index}};
  if (r.ok()) {
    ++report.answered;
    j["class"] = r->result.class_id;
    j["class_name"] = r->class_name;
    j["confidence"] = r->result.confidence;
    j["exit_layer"] = r->result.exit_layer;
    j["decided"] = DecisionName(r->decided);
    j["total_us"] = r->timings.total_us;
  } else {
    ++report.failed;
    j["error"] = r.status().ToString();
  }
  out << j.dump() << "\n";
  out.flush();
}

}  // namespace

absl::StatusOr<SourceReport> RunSource(const SourceOptions& options, EdgeEngine* engine, std::ostream& out,
                                       const std::atomic<bool>& stop) {
  SourceReport report;
  const std::string& spec = options.spec;
  auto more = [&] { return !stop.load() && (options.max_items <= 0 || report.items < options.max_items); };
  if (absl::StartsWith(spec, "folder:")) {
    auto files = common::ListImageFiles({spec.substr(7)});
    if (!files.ok()) return files.status();
    for (const auto& f : *files) {
      if (!more()) break;
      ClassifyInput in;
      in.request_id = f;
      auto image = common::ReadImageFile(f);
      if (!image.ok()) {
        ++report.items;
        Emit(out, f, report.items - 1, image.status(), report);
        continue;
      }
      in.image = std::move(*image);
      ++report.items;
      Emit(out, f, report.items - 1, engine->ClassifySync(std::move(in)), report);
    }
    return report;
  }
  cv::VideoCapture cap;
  if (absl::StartsWith(spec, "video:")) {
    cap.open(spec.substr(6));
  } else if (absl::StartsWith(spec, "camera:")) {
    int index = 0;
    if (!absl::SimpleAtoi(spec.substr(7), &index)) {
      return absl::InvalidArgumentError(absl::StrCat("bad camera index in source '", spec, "'"));
    }
    cap.open(index);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("source '", spec, "' is not folder:PATH, video:PATH or camera:INDEX"));
  }
  if (!cap.isOpened()) return absl::NotFoundError(absl::StrCat("cannot open source '", spec, "'"));
  cv::Mat frame;
  while (more() && cap.read(frame) && !frame.empty()) {
    ClassifyInput in;
    in.request_id = absl::StrCat(spec, "#", report.items);
    in.image = frame.clone();
    ++report.items;
    Emit(out, spec, report.items - 1, engine->ClassifySync(std::move(in)), report);
  }
  return report;
}

}  // namespace eenn::device
