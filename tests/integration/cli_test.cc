// Every eenn binary's --help lists its own flags (not absl's) and --version
// names the project's version (eenn-train's --version is the bundle's).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/process_util.h"

namespace eenn {
namespace {

using testing::BinPath;
using testing::RunCommand;

struct Binary {
  std::string name;
  std::vector<std::string> flags;  // some of its own flags
};

const std::vector<Binary>& Binaries() {
  static const auto* const kBinaries = new std::vector<Binary>{
      {"eenn-device", {"--bundle", "--server", "--queue_capacity", "--tls_cert"}},
      {"eenn-server", {"--bundle", "--listen", "--tls_cert"}},
      {"eenn-client", {"--device", "--arrivals", "--concurrency"}},
      {"eenn-infer", {"--bundle", "--json"}},
      {"eenn-train", {"--train_mode", "--epochs", "--resume", "--val_ratio"}},
      {"eenn-calibrate", {"--max_drop", "--configs"}},
      {"eenn-eval", {"--split", "--json"}},
      {"eenn-profile", {"--images", "--out"}},
      {"eenn-plan", {"--device_profile", "--bandwidth_mbps"}},
      {"eenn-queue", {"--rate", "--arrival_work_ms"}},
      {"eenn-control-sim", {"--configs", "--baseline_ms"}},
      {"eenn-bench-forward", {"--model", "--iters"}},
      {"eenn-bench-server", {"--server", "--split"}},
  };
  return *kBinaries;
}

TEST(CliTest, HelpListsTheBinarysOwnFlags) {
  for (const Binary& b : Binaries()) {
    SCOPED_TRACE(b.name);
    testing::CommandResult r = RunCommand(BinPath(b.name) + " --help 2>&1");
    // absl's --help exits 1 in this version; what matters is what it printed.
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.exit_code;
    EXPECT_EQ(r.out.find("No flags matched"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(b.name + ": "), std::string::npos) << "no usage line:\n" << r.out;
    for (const std::string& flag : b.flags) {
      EXPECT_NE(r.out.find("    " + flag + " ("), std::string::npos) << flag << " not listed:\n" << r.out;
    }
    // absl's own flags stay under --helpfull, and file names are the source tree's.
    EXPECT_EQ(r.out.find("--flagfile"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Flags from " + std::string(b.name == "eenn-device"   ? "device/"
                                                    : b.name == "eenn-server" ? "server/"
                                                                              : "tools/")),
              std::string::npos)
        << r.out;
  }
}

TEST(CliTest, VersionNamesTheProject) {
  for (const Binary& b : Binaries()) {
    // eenn-train's --version is the version it writes into the bundle.
    if (b.name == "eenn-train") continue;
    SCOPED_TRACE(b.name);
    testing::CommandResult r = RunCommand(BinPath(b.name) + " --version 2>&1");
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out, b.name + " (eenn " EENN_VERSION ")\n");
  }
}

TEST(CliTest, UnknownFlagIsAClearError) {
  testing::CommandResult r = RunCommand(BinPath("eenn-queue") + " --no_such_flag 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("no_such_flag"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace eenn
