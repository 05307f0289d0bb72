// eenn-profile: measures this machine's profile of a bundle and writes
// <out>/profile_summary.json (the reference's keys plus eenn's section that
// eenn-plan and the device's planner read). Run it on the device and on the
// server side: profiles are per machine.
//
//   eenn-profile --bundle models/cifar10-resnet18 --images ../shared/datasets/cifar10/test
//     --out profiles/device --threads 2
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/bundle.h"
#include "common/cli.h"
#include "common/daemon.h"
#include "common/image.h"
#include "common/threads.h"
#include "tools/profiler.h"

ABSL_FLAG(std::string, bundle, "", "Bundle to profile.");
ABSL_FLAG(std::string, images, "", "Folder (searched recursively) or file of images to time with.");
ABSL_FLAG(std::string, calibration, "",
          "Folder of images behind the exit shares (default: --images); class-named folders also "
          "give per-exit accuracy.");
ABSL_FLAG(int, samples, 200, "Timed batch-1 samples.");
ABSL_FLAG(int, warmup, 20, "Untimed passes first.");
ABSL_FLAG(int, wire_samples, 20, "Samples behind the wire sizes and codec costs.");
ABSL_FLAG(int, calibration_limit, 0, "Use at most this many calibration images (0 = all).");
ABSL_FLAG(std::string, wire, "", "Comma-separated wire formats to measure (default: all).");
ABSL_FLAG(int, threads, 2, "LibTorch threads (profile with the daemon's setting).");
ABSL_FLAG(std::string, out, "", "Output folder for profile_summary.json.");
ABSL_FLAG(bool, quiet, false, "No progress or table on stderr.");

namespace {
int Fail(const absl::Status& s) {
  std::cerr << "eenn-profile: " << s << "\n";
  return 2;
}

// Every N-th file, so a capped list still spans every class folder.
std::vector<std::string> Spread(const std::vector<std::string>& files, size_t limit) {
  if (limit == 0 || files.size() <= limit) return files;
  std::vector<std::string> out;
  for (size_t i = 0; i < limit; ++i) out.push_back(files[i * files.size() / limit]);
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  eenn::common::ParseFlags(argc, argv,
      "Profile a bundle on this machine.\n  eenn-profile --bundle DIR --images DIR --out DIR");
  if (absl::GetFlag(FLAGS_bundle).empty() || absl::GetFlag(FLAGS_images).empty() ||
      absl::GetFlag(FLAGS_out).empty()) {
    std::cerr << "usage: eenn-profile --bundle DIR --images DIR --out DIR (see --help)\n";
    return 2;
  }
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) return Fail(s);
  auto bundle = eenn::common::LoadBundle(absl::GetFlag(FLAGS_bundle));
  if (!bundle.ok()) return Fail(bundle.status());
  auto images = eenn::common::ListImageFiles({absl::GetFlag(FLAGS_images)});
  if (!images.ok()) return Fail(images.status());
  if (images->empty()) return Fail(absl::InvalidArgumentError(absl::StrCat("no images under ", absl::GetFlag(FLAGS_images))));
  std::vector<std::string> calib;
  if (!absl::GetFlag(FLAGS_calibration).empty()) {
    auto c = eenn::common::ListImageFiles({absl::GetFlag(FLAGS_calibration)});
    if (!c.ok()) return Fail(c.status());
    calib = *c;
  } else {
    calib = *images;
  }
  calib = Spread(calib, static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_calibration_limit))));

  eenn::tools::ProfilerOptions o;
  o.samples = absl::GetFlag(FLAGS_samples);
  o.warmup = absl::GetFlag(FLAGS_warmup);
  o.wire_samples = absl::GetFlag(FLAGS_wire_samples);
  o.threads = absl::GetFlag(FLAGS_threads);
  if (!absl::GetFlag(FLAGS_wire).empty()) {
    o.wire_keys = absl::StrSplit(absl::GetFlag(FLAGS_wire), ',', absl::SkipEmpty());
  }
  const bool quiet = absl::GetFlag(FLAGS_quiet);
  if (!quiet) o.progress = [](const std::string& s) { std::fprintf(stderr, "eenn-profile: %s ...\n", s.c_str()); };
  // Time with files spread over the folder's classes, not the first class only.
  auto profile = eenn::tools::ProfileBundle(*bundle, Spread(*images, static_cast<size_t>(o.samples)), calib, o);
  if (!profile.ok()) return Fail(profile.status());

  std::error_code ec;
  std::filesystem::create_directories(absl::GetFlag(FLAGS_out), ec);
  const std::string path = (std::filesystem::path(absl::GetFlag(FLAGS_out)) / "profile_summary.json").string();
  if (auto s = eenn::common::WriteFileAtomically(path, eenn::common::ProfileToJson(*profile)); !s.ok()) {
    return Fail(s);
  }
  if (!quiet) {
    const auto& p = *profile;
    std::fprintf(stderr, "\n%-5s %-28s %10s %10s %12s %12s\n", "layer", "key", "mean ms", "p90 ms",
                 "fp32 bytes", "int8 bytes");
    for (const auto& l : p.layers) {
      auto b = [&](const char* k) { auto it = l.wire.find(k); return it == l.wire.end() ? 0.0 : it->second.bytes; };
      std::fprintf(stderr, "%-5d %-28s %10.3f %10.3f %12.0f %12.0f\n", l.index, l.key.c_str(), l.ms.mean,
                   l.ms.p90, b("fp32"), b("int8"));
    }
    std::fprintf(stderr, "\n%-5s %-6s %10s %12s %8s %10s\n", "exit", "layer", "head ms", "single ms",
                 "share", "accuracy");
    for (const auto& e : p.exits) {
      std::fprintf(stderr, "%-5d %-6d %10.3f %12.3f %7.2f%% %9s\n", e.exit_index, e.layer,
                   p.heads[e.exit_index].ms.mean, e.single_ms.mean, 100 * e.share,
                   e.accuracy < 0 ? "-" : absl::StrFormat("%.2f%%", 100 * e.accuracy).c_str());
    }
    std::fprintf(stderr, "\npreprocess %.3f ms, whole network %.3f ms, with exits %.3f ms (%lld timed samples, "
                 "%lld calibration images)\nwrote %s\n",
                 p.preprocess_ms.mean, p.full_ms.mean, p.eenn_ms.mean, static_cast<long long>(p.samples),
                 static_cast<long long>(p.calibration_samples), path.c_str());
  }
  return 0;
}
