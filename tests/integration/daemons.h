// Starting the real daemons in integration tests: a daemon on ephemeral ports
// reported through its ready file, eenn-client runs parsed from --json, and its
// per-request JSON lines. Header-only.
#ifndef EENN_TESTS_INTEGRATION_DAEMONS_H_
#define EENN_TESTS_INTEGRATION_DAEMONS_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/process_util.h"

namespace eenn::testing {

struct Daemon {
  Process proc;
  int grpc_port = 0;
  int metrics_port = 0;
  std::string addr() const { return "127.0.0.1:" + std::to_string(grpc_port); }
};

// Starts a daemon with a ready file in `dir`; fails the test when it does not come up.
inline void StartDaemon(Daemon& d, const std::string& binary, std::vector<std::string> args, const std::string& dir,
                 const std::string& name) {
  const std::string ready = dir + "/" + name + ".ready";
  std::filesystem::remove(ready);
  args.insert(args.begin(), BinPath(binary));
  args.push_back("--ready_file=" + ready);
  args.push_back("--threads=1");
  ASSERT_TRUE(d.proc.Start(args, dir + "/" + name + ".log"));
  auto j = testing::WaitReady(d.proc, ready);
  ASSERT_FALSE(j.is_null()) << name << " did not become ready:\n" << d.proc.log();
  d.grpc_port = j["grpc_port"].get<int>();
  d.metrics_port = j["metrics_port"].get<int>();
}

// Every result line of an eenn-client --results file, in order.
inline std::vector<nlohmann::json> ReadResultLines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(testing::ReadAll(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;
    out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

// The last result of each file.
inline std::map<std::string, nlohmann::json> ReadResults(const std::string& path) {
  std::map<std::string, nlohmann::json> out;
  for (auto& j : ReadResultLines(path)) out[j["file"].get<std::string>()] = j;
  return out;
}

inline nlohmann::json RunClient(const std::string& device, const std::string& images, const std::string& results,
                         const std::string& extra = "") {
  auto r = RunCommand(BinPath("eenn-client") + " --plaintext --quiet --json --device=" + device + " --results=" + results +
                      " " + extra + " " + images + " 2>&1");
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded()) {
    ADD_FAILURE() << "eenn-client output is not JSON (exit " << r.exit_code << "):\n" << r.out;
    return nlohmann::json::object();
  }
  return j;
}

}  // namespace eenn::testing

#endif  // EENN_TESTS_INTEGRATION_DAEMONS_H_
