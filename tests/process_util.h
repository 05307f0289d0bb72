// Test helpers that start the real eenn binaries as child processes: spawn
// with arguments and a log file, wait for the ready file a daemon writes once
// serving, signal, reap. Header-only; POSIX.
#ifndef EENN_TESTS_PROCESS_UTIL_H_
#define EENN_TESTS_PROCESS_UTIL_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/file_util.h"

namespace eenn::testing {

inline std::string BinPath(const std::string& name) {
  const char* dir = std::getenv("EENN_BIN_DIR");
  return std::string(dir ? dir : "build/bin") + "/" + name;
}

// A child process whose stdout and stderr go to `log`.
class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() { Kill(SIGKILL); }

  bool Start(const std::vector<std::string>& argv, const std::string& log) {
    log_ = log;
    pid_ = fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    return true;
  }

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  std::string log() const { return ReadAll(log_); }

  void Signal(int sig) {
    if (pid_ > 0) kill(pid_, sig);
  }

  // Waits for exit; returns the exit code (128 + signal when killed), -1 on timeout.
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    if (pid_ <= 0) return exit_code_;
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return exit_code_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  void Kill(int sig) {
    if (pid_ > 0) {
      kill(pid_, sig);
      Wait(std::chrono::seconds(30));
    }
  }

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  std::string log_;
};

// Polls for a daemon's ready file ({"grpc_port", "metrics_port", "pid"}) while
// the process lives. Returns the parsed JSON, or null when the process died
// or the timeout passed.
inline nlohmann::json WaitReady(Process& p, const std::string& ready_file,
                                std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    const std::string text = ReadAll(ready_file);
    if (!text.empty()) {
      auto j = nlohmann::json::parse(text, nullptr, false);
      if (!j.is_discarded()) return j;
    }
    int status = 0;
    if (waitpid(p.pid(), &status, WNOHANG) == p.pid()) return nullptr;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return nullptr;
}

// Runs a shell command, returning its exit code and stdout.
struct CommandResult {
  int exit_code = -1;
  std::string out;
};
inline CommandResult RunCommand(const std::string& cmd) {
  CommandResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// GET http://127.0.0.1:port/path; returns the body ("" on failure).
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return "";
  }
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = resp.find("\r\n\r\n");
  return body == std::string::npos ? "" : resp.substr(body + 4);
}

// The value of the sample line that starts with `series` (name plus labels,
// exactly as exposed), or -1.
inline double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

}  // namespace eenn::testing

#endif  // EENN_TESTS_PROCESS_UTIL_H_
