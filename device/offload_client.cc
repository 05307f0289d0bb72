#include "device/offload_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <set>

#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "proto/eenn.grpc.pb.h"
#include "proto/wire.h"

namespace eenn::device {
namespace {

ServerLoadReport FromProto(const v1::ServerLoad& l) {
  return ServerLoadReport{l.queue_depth(), l.queue_capacity(), l.service_rate()};
}

// Target schemes gRPC resolves; a value starting with one is passed as is.
bool HasScheme(absl::string_view s) {
  for (absl::string_view scheme : {"dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:"}) {
    if (absl::StartsWith(s, scheme)) return true;
  }
  return false;
}

struct HostPort {
  std::string host;
  int port = 0;
};

absl::StatusOr<HostPort> SplitHostPort(absl::string_view entry, absl::string_view whole) {
  HostPort hp;
  absl::string_view port;
  if (absl::StartsWith(entry, "[")) {
    const size_t close = entry.find(']');
    if (close == absl::string_view::npos || close + 1 >= entry.size() || entry[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("--server entry '", entry, "' in '", whole, "': write IPv6 addresses as [address]:port"));
    }
    hp.host = std::string(entry.substr(1, close - 1));
    port = entry.substr(close + 2);
  } else {
    const size_t colon = entry.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--server entry '", entry, "' in '", whole, "' has no port (host:port)"));
    }
    if (entry.substr(0, colon).find(':') != absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--server entry '", entry, "' in '", whole, "': write IPv6 addresses as [address]:port"));
    }
    hp.host = std::string(entry.substr(0, colon));
    port = entry.substr(colon + 1);
  }
  if (hp.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--server entry '", entry, "' in '", whole, "' has no host"));
  }
  if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }) ||
      !absl::SimpleAtoi(port, &hp.port) || hp.port < 1 || hp.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--server entry '", entry, "' in '", whole, "': port '", port, "' is not in 1..65535"));
  }
  return hp;
}

// Every address of `host` as (is_ipv6, text); literals as they are, names
// through the system resolver.
absl::StatusOr<std::vector<std::pair<bool, std::string>>> Addresses(const std::string& host) {
  in_addr a4;
  in6_addr a6;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return std::vector<std::pair<bool, std::string>>{{false, host}};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return std::vector<std::pair<bool, std::string>>{{true, host}};
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--server host '", host, "' does not resolve: ", gai_strerror(rc)));
  }
  std::vector<std::pair<bool, std::string>> out;
  std::set<std::string> seen;
  for (addrinfo* p = res; p != nullptr; p = p->ai_next) {
    char text[INET6_ADDRSTRLEN] = {0};
    bool v6 = false;
    if (p->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(p->ai_addr)->sin_addr, text, sizeof text);
    } else if (p->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(p->ai_addr)->sin6_addr, text, sizeof text);
      v6 = true;
    } else {
      continue;
    }
    if (seen.insert(text).second) out.emplace_back(v6, text);
  }
  freeaddrinfo(res);
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("--server host '", host, "' has no IP address"));
  return out;
}

class GrpcOffloadClient final : public OffloadClient {
 public:
  GrpcOffloadClient(const GrpcOffloadClientOptions& o, const std::string& uri, grpc::ChannelArguments args,
                    std::shared_ptr<grpc::ChannelCredentials> credentials)
      : target_(o.target) {
    args.SetMaxReceiveMessageSize(o.max_message_bytes);
    args.SetMaxSendMessageSize(o.max_message_bytes);
    // Reconnect quickly after a server restart.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    // Round robin with health checking and retries, whatever DNS says.
    args.SetServiceConfigJSON(OffloadServiceConfig(o.max_attempts));
    args.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
    // A retried call replays its request: keep all of it (the default
    // buffer of 256 KiB would make large split tensors unretryable).
    args.SetInt(GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE, o.max_message_bytes);
    channel_ = grpc::CreateCustomChannel(uri, std::move(credentials), args);
    stub_ = v1::OffloadService::NewStub(channel_);
  }

  absl::StatusOr<ResumeAnswer> Resume(ResumeCall call, absl::Duration timeout) override {
    v1::ResumeRequest req;
    req.set_request_id(call.request_id);
    req.set_model_name(call.model_name);
    req.set_model_version(call.model_version);
    req.set_split_layer(call.split_layer);
    wire::ToProto(std::move(call.tensor), req.mutable_tensor());
    v1::ResumeReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    grpc::Status s = stub_->Resume(&ctx, req, &reply);
    if (!s.ok()) return wire::FromGrpc(s);
    ResumeAnswer a;
    a.request_bytes = static_cast<int64_t>(req.ByteSizeLong());
    a.reply_bytes = static_cast<int64_t>(reply.ByteSizeLong());
    a.server_queue_us = reply.timings().queue_us();
    a.server_compute_us = reply.timings().compute_us();
    a.server_load = FromProto(reply.load());
    for (const auto& p : reply.predictions()) {
      common::ExitResult r;
      r.class_id = p.class_id();
      r.confidence = p.confidence();
      r.exit_layer = p.exit_layer();
      r.confidences.assign(p.exit_confidences().begin(), p.exit_confidences().end());
      a.predictions.push_back(std::move(r));
    }
    const int64_t n = req.tensor().shape_size() > 0 ? req.tensor().shape(0) : 0;
    if (static_cast<int64_t>(a.predictions.size()) != n) {
      return absl::InternalError(absl::StrCat("eenn-server answered ", a.predictions.size(),
                                              " predictions for ", n, " samples"));
    }
    return a;
  }

  absl::StatusOr<RemoteModel> GetModelInfo(absl::Duration timeout) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::ModelInfo info;
    grpc::Status s = stub_->GetModelInfo(&ctx, v1::ModelInfoRequest(), &info);
    if (!s.ok()) return wire::FromGrpc(s);
    RemoteModel m;
    m.name = info.model_name();
    m.version = info.model_version();
    m.weights_sha256 = info.weights_sha256();
    m.num_layers = info.num_layers();
    m.has_load = info.has_load();
    m.load = FromProto(info.load());
    return m;
  }

  absl::StatusOr<int64_t> Probe(int64_t padding_bytes, absl::Duration timeout) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::ProbeRequest req;
    req.mutable_padding()->resize(static_cast<size_t>(std::max<int64_t>(0, padding_bytes)), '\x5a');
    v1::ProbeReply reply;
    grpc::Status s = stub_->Probe(&ctx, req, &reply);
    if (!s.ok()) return wire::FromGrpc(s);
    return static_cast<int64_t>(req.ByteSizeLong());
  }

  std::string target() const override { return target_; }

 private:
  std::string target_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::OffloadService::Stub> stub_;
};

}  // namespace

absl::StatusOr<ServerTarget> ParseServerTarget(const std::string& server) {
  const std::string whole(absl::StripAsciiWhitespace(server));
  if (whole.empty()) return absl::InvalidArgumentError("offload server address is empty");
  ServerTarget t;
  if (whole.find(',') == std::string::npos) {
    t.uri = whole;
    return t;
  }
  if (HasScheme(whole)) {
    if (!absl::StartsWith(whole, "ipv4:") && !absl::StartsWith(whole, "ipv6:")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--server '", whole, "': only ipv4: and ipv6: targets list several addresses; write several servers as "
          "host:port,host:port or one dns:///name:port"));
    }
    t.uri = whole;
    t.backends = static_cast<int>(std::count(whole.begin(), whole.end(), ',')) + 1;
    return t;
  }
  std::vector<std::pair<std::string, std::pair<bool, std::string>>> backends;  // port, (v6, address)
  std::set<std::string> hosts;
  for (absl::string_view raw : absl::StrSplit(whole, ',')) {
    const absl::string_view entry = absl::StripAsciiWhitespace(raw);
    if (entry.empty()) return absl::InvalidArgumentError(absl::StrCat("--server '", whole, "' has an empty entry"));
    auto hp = SplitHostPort(entry, whole);
    if (!hp.ok()) return hp.status();
    hosts.insert(hp->host);
    auto addresses = Addresses(hp->host);
    if (!addresses.ok()) return addresses.status();
    for (auto& a : *addresses) backends.emplace_back(std::to_string(hp->port), std::move(a));
  }
  const bool any_v6 = std::any_of(backends.begin(), backends.end(), [](const auto& b) { return b.second.first; });
  std::vector<std::string> parts;
  std::set<std::string> unique;
  for (const auto& [port, addr] : backends) {
    // One ipv6: list can carry IPv4 backends as v4-mapped addresses.
    const std::string part = !any_v6 ? absl::StrCat(addr.second, ":", port)
                             : addr.first ? absl::StrCat("[", addr.second, "]:", port)
                                          : absl::StrCat("[::ffff:", addr.second, "]:", port);
    if (unique.insert(part).second) parts.push_back(part);
  }
  t.uri = absl::StrCat(any_v6 ? "ipv6:" : "ipv4:", absl::StrJoin(parts, ","));
  t.backends = static_cast<int>(parts.size());
  if (hosts.size() == 1) t.common_host = *hosts.begin();
  return t;
}

std::string OffloadServiceConfig(int max_attempts) {
  std::string config = R"({"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":""})";
  if (max_attempts > 1) {
    absl::StrAppend(&config, R"(,"methodConfig":[{"name":[{"service":"eenn.v1.OffloadService","method":"Resume"},)",
                    R"({"service":"eenn.v1.OffloadService","method":"GetModelInfo"}],)",
                    R"("retryPolicy":{"maxAttempts":)", std::min(max_attempts, 5),
                    R"(,"initialBackoff":"0.01s","maxBackoff":"0.1s","backoffMultiplier":2,)",
                    R"("retryableStatusCodes":["UNAVAILABLE"]}}])");
  }
  absl::StrAppend(&config, "}");
  return config;
}

absl::StatusOr<std::unique_ptr<OffloadClient>> MakeGrpcOffloadClient(const GrpcOffloadClientOptions& options) {
  if (options.max_attempts < 1 || options.max_attempts > 5) {
    return absl::InvalidArgumentError(
        absl::StrCat("offload attempts must be in 1..5 (gRPC's limit), not ", options.max_attempts));
  }
  auto target = ParseServerTarget(options.target);
  if (!target.ok()) return target.status();
  common::TlsOptions tls = options.tls;
  const bool list = target->uri.find(',') != std::string::npos;
  if (list && !tls.plaintext && tls.server_name.empty()) {
    // The channel's authority would be the whole list: verify every server
    // against the one host the list names, or against the name given.
    if (target->common_host.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--server '", options.target, "' names several hosts over TLS: give --server_tls_name, the name every "
          "server's certificate carries"));
    }
    tls.server_name = target->common_host;
  }
  grpc::ChannelArguments args;
  auto credentials = common::MakeChannelCredentials(tls, &args);
  if (!credentials.ok()) return credentials.status();
  return std::unique_ptr<OffloadClient>(
      new GrpcOffloadClient(options, target->uri, std::move(args), *std::move(credentials)));
}

}  // namespace eenn::device
