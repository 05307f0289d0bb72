// Command-line parsing shared by every eenn binary.
#ifndef EENN_COMMON_CLI_H_
#define EENN_COMMON_CLI_H_

#include <vector>

#include "absl/strings/string_view.h"

namespace eenn::common {

// Sets `usage` as the program's usage text, then parses the command line with
// absl. --help lists the flags defined in eenn's own sources (the binary's own
// and shared ones such as the TLS flags; absl's built-in flags stay under
// --helpfull), --version prints "<program> (eenn <version>)". Returns the
// positional arguments, argv[0] first, as absl::ParseCommandLine does.
std::vector<char*> ParseFlags(int argc, char** argv, absl::string_view usage);

// True for a flag defined in eenn's own sources (what --help lists).
bool IsProjectFlagFile(absl::string_view filename);

}  // namespace eenn::common

#endif  // EENN_COMMON_CLI_H_
