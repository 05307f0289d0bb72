#include "common/tls_flags.h"

#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(bool, plaintext, false,
          "No transport security on this binary's gRPC (TLS is the default; plaintext must be "
          "chosen explicitly).");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: a daemon's server certificate, a caller's client certificate.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle. Daemon: require client certificates chaining to it (mutual TLS). Caller: "
          "verify the server against it (default: the system's roots).");
ABSL_FLAG(std::string, tls_server_name, "",
          "Caller: the name the server's certificate must carry (default: the target's host).");

namespace eenn::common {

TlsOptions TlsFromFlags() {
  TlsOptions o;
  o.plaintext = absl::GetFlag(FLAGS_plaintext);
  o.cert = absl::GetFlag(FLAGS_tls_cert);
  o.key = absl::GetFlag(FLAGS_tls_key);
  o.ca = absl::GetFlag(FLAGS_tls_ca);
  o.server_name = absl::GetFlag(FLAGS_tls_server_name);
  return o;
}

}  // namespace eenn::common
