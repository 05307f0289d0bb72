#include "common/cli.h"

#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"

#ifndef EENN_VERSION
#define EENN_VERSION "unknown"
#endif
#ifndef EENN_SOURCE_DIR
#define EENN_SOURCE_DIR ""
#endif

namespace eenn::common {

bool IsProjectFlagFile(absl::string_view filename) {
  // absl's own flags (--flagfile, --fromenv, ...) are defined under absl/. A
  // flag another third-party library defined would be listed too (none does).
  return !filename.empty() && !absl::StrContains(filename, "absl/");
}

std::vector<char*> ParseFlags(int argc, char** argv, absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = IsProjectFlagFile;
  config.contains_helpshort_flags = IsProjectFlagFile;
  // "Flags from tools/queue_main.cc", not the build machine's absolute path.
  config.normalize_filename = [](absl::string_view f) {
    absl::ConsumePrefix(&f, EENN_SOURCE_DIR "/");
    absl::ConsumePrefix(&f, "/");
    return std::string(f);
  };
  const std::string program = argc > 0 ? argv[0] : "eenn";
  config.version_string = [program] {
    const size_t slash = program.rfind('/');
    return absl::StrCat(slash == std::string::npos ? program : program.substr(slash + 1),
                        " (eenn ", EENN_VERSION, ")\n");
  };
  absl::SetFlagsUsageConfig(config);
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace eenn::common
