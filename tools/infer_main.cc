// eenn-infer: classify image files or folders locally with a bundle.
//
//   eenn-infer --bundle models/cifar10 img.jpg some/folder [--json]
//
// Prints class, confidence and exit layer per image; with --json one object
// per line: {"file", "class", "class_name", "confidence", "exit_layer"}.
// A summary (images, exit histogram, time per image) goes to stderr.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/bundle.h"
#include "common/cli.h"
#include "common/image.h"
#include "common/tensor_image.h"
#include "common/threads.h"

ABSL_FLAG(std::string, bundle, "", "Model bundle directory (holds manifest.json).");
ABSL_FLAG(bool, json, false, "Print one JSON object per image.");
ABSL_FLAG(int, batch, 1, "Images per forward pass.");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads (0 = all cores).");
ABSL_FLAG(std::string, thresholds, "",
          "Comma-separated per-exit thresholds overriding the bundle's (negative skips an exit).");
ABSL_FLAG(bool, quiet, false, "Print only the summary (no per-image lines).");
ABSL_FLAG(bool, no_exits, false, "Answer with the final exit only (all early exits skipped).");

namespace {

int Fail(const absl::Status& s) {
  std::cerr << "eenn-infer: " << s << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = eenn::common::ParseFlags(argc, argv,
      "Classify images with an eenn bundle.\n  eenn-infer --bundle DIR [--json] FILE_OR_FOLDER...");
  std::vector<std::string> inputs(args.begin() + 1, args.end());
  if (absl::GetFlag(FLAGS_bundle).empty() || inputs.empty()) {
    std::cerr << "usage: eenn-infer --bundle DIR [--json] FILE_OR_FOLDER...\n";
    return 2;
  }
  const int batch = std::max(1, absl::GetFlag(FLAGS_batch));
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) {
    return Fail(s);
  }
  auto bundle = eenn::common::LoadBundle(absl::GetFlag(FLAGS_bundle));
  if (!bundle.ok()) return Fail(bundle.status());
  eenn::common::ExitPolicy policy = bundle->policy;
  if (!absl::GetFlag(FLAGS_thresholds).empty()) {
    policy.thresholds.clear();
    for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_thresholds), ',')) {
      float v;
      if (!absl::SimpleAtof(t, &v)) return Fail(absl::InvalidArgumentError(absl::StrCat("bad threshold '", t, "'")));
      policy.thresholds.push_back(v);
    }
  }
  if (absl::GetFlag(FLAGS_no_exits)) {
    for (size_t g = 0; g + 1 < policy.thresholds.size(); ++g) policy.thresholds[g] = -1.0f;
  }
  if (auto s = bundle->model->ValidatePolicy(policy); !s.ok()) return Fail(s);
  auto files = eenn::common::ListImageFiles(inputs);
  if (!files.ok()) return Fail(files.status());

  const auto& manifest = bundle->manifest;
  std::map<int, int> histogram;
  std::map<std::string, int64_t> class_index;
  for (size_t c = 0; c < manifest.class_names.size(); ++c) class_index[manifest.class_names[c]] = c;
  int failed = 0, done = 0, labelled = 0, correct = 0;
  double compute_s = 0;
  for (size_t start = 0; start < files->size(); start += batch) {
    std::vector<cv::Mat> images;
    std::vector<std::string> names;
    for (size_t i = start; i < std::min(files->size(), start + batch); ++i) {
      auto img = eenn::common::ReadImageFile((*files)[i]);
      if (!img.ok()) {
        std::cerr << "eenn-infer: " << img.status().message() << "\n";
        ++failed;
        continue;
      }
      images.push_back(*std::move(img));
      names.push_back((*files)[i]);
    }
    if (images.empty()) continue;
    const auto t0 = std::chrono::steady_clock::now();
    auto x = eenn::common::ImagesToTensor(images, manifest.input);
    if (!x.ok()) return Fail(x.status());
    auto results = bundle->model->Classify(*x, policy);
    if (!results.ok()) return Fail(results.status());
    compute_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t i = 0; i < results->size(); ++i) {
      const auto& r = (*results)[i];
      const std::string& cname = manifest.class_names[r.class_id];
      ++histogram[r.exit_layer];
      ++done;
      // A file inside a folder named like a class is labelled with that class.
      const std::string parent = std::filesystem::path(names[i]).parent_path().filename().string();
      if (auto it = class_index.find(parent); it != class_index.end()) {
        ++labelled;
        correct += it->second == r.class_id;
      }
      if (absl::GetFlag(FLAGS_quiet)) continue;
      if (absl::GetFlag(FLAGS_json)) {
        nlohmann::json j = {{"file", names[i]},
                            {"class", r.class_id},
                            {"class_name", cname},
                            {"confidence", r.confidence},
                            {"exit_layer", r.exit_layer}};
        std::cout << j.dump() << "\n";
      } else {
        std::printf("%s\t%s (%lld)\tconfidence %.4f\texit layer %d\n", names[i].c_str(),
                    cname.c_str(), static_cast<long long>(r.class_id), r.confidence,
                    r.exit_layer);
      }
    }
  }
  std::cout.flush();
  std::string hist;
  for (const auto& [layer, n] : histogram) absl::StrAppend(&hist, hist.empty() ? "" : ", ", layer, ":", n);
  std::string acc;
  if (labelled > 0) {
    acc = absl::StrFormat("; accuracy %.2f%% (%d of %d labelled by folder)", 100.0 * correct / labelled,
                          correct, labelled);
  }
  std::fprintf(stderr, "eenn-infer: %d images classified, %d failed%s; exit layers {%s}; %.2f ms/image\n",
               done, failed, acc.c_str(), hist.c_str(), done ? 1000.0 * compute_s / done : 0.0);
  return failed ? 1 : 0;
}
