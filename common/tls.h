// Transport security for every gRPC hop (client -> device, device -> server):
// credentials built from PEM files named by flags. TLS is the default;
// plaintext must be chosen explicitly (--plaintext), so a daemon started
// without certificates refuses to start instead of silently serving in clear.
#ifndef EENN_COMMON_TLS_H_
#define EENN_COMMON_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ChannelArguments;
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace eenn::common {

struct TlsOptions {
  bool plaintext = false;   // no TLS (explicit choice)
  std::string cert;         // PEM certificate chain of this endpoint
  std::string key;          // PEM private key of `cert`
  // Server side: clients must present a certificate chaining to this CA
  // (mutual TLS); empty: any client (TLS without client authentication).
  // Client side: the server's certificate must chain to it; empty: the
  // system's root store.
  std::string ca;
  // Client side: the name the server's certificate must carry (default: the
  // host part of the target).
  std::string server_name;
};

// Listening credentials. Plaintext: insecure. Else `cert` and `key` are
// required; with `ca` the server requires and verifies client certificates.
// InvalidArgument when neither TLS files nor plaintext are given, or when only
// one of cert/key is; NotFound/DataLoss for unreadable or non-PEM files.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsOptions& o);

// Channel credentials. Plaintext: insecure. Else TLS verifying the server
// against `ca`, presenting `cert`/`key` (both or neither) as a client
// certificate. Applies `server_name` to `args` when set.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsOptions& o, grpc::ChannelArguments* args);

// "plaintext" or "tls" / "mutual TLS" (for logs).
std::string DescribeServer(const TlsOptions& o);

}  // namespace eenn::common

#endif  // EENN_COMMON_TLS_H_
