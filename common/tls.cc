#include "common/tls.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace eenn::common {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " '", path, "'"));
  std::ostringstream s;
  s << in.rdbuf();
  std::string pem = s.str();
  if (!absl::StrContains(pem, "-----BEGIN ")) {
    return absl::DataLossError(absl::StrCat(what, " '", path, "' is not PEM"));
  }
  return pem;
}

absl::Status CheckPair(const TlsOptions& o) {
  if (o.cert.empty() != o.key.empty()) {
    return absl::InvalidArgumentError("give both --tls_cert and --tls_key, or neither");
  }
  return absl::OkStatus();
}

// Reads the endpoint's certificate chain and private key.
absl::Status ReadIdentity(const TlsOptions& o, std::string* cert, std::string* key) {
  auto c = ReadPem(o.cert, "certificate");
  if (!c.ok()) return c.status();
  auto k = ReadPem(o.key, "private key");
  if (!k.ok()) return k.status();
  *cert = *std::move(c);
  *key = *std::move(k);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsOptions& o) {
  if (o.plaintext) {
    if (!o.cert.empty() || !o.key.empty() || !o.ca.empty()) {
      return absl::InvalidArgumentError("--plaintext contradicts --tls_cert/--tls_key/--tls_ca");
    }
    return grpc::InsecureServerCredentials();
  }
  if (absl::Status s = CheckPair(o); !s.ok()) return s;
  if (o.cert.empty()) {
    return absl::InvalidArgumentError(
        "no transport security configured: give --tls_cert and --tls_key (and --tls_ca to require "
        "client certificates), or choose --plaintext explicitly");
  }
  grpc::SslServerCredentialsOptions opts(o.ca.empty()
                                             ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                             : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  if (absl::Status s = ReadIdentity(o, &pair.cert_chain, &pair.private_key); !s.ok()) return s;
  opts.pem_key_cert_pairs.push_back(std::move(pair));
  if (!o.ca.empty()) {
    auto ca = ReadPem(o.ca, "CA bundle");
    if (!ca.ok()) return ca.status();
    opts.pem_root_certs = *std::move(ca);
  }
  return grpc::SslServerCredentials(opts);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsOptions& o, grpc::ChannelArguments* args) {
  if (o.plaintext) {
    if (!o.cert.empty() || !o.key.empty() || !o.ca.empty()) {
      return absl::InvalidArgumentError("plaintext contradicts the TLS certificate flags");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (absl::Status s = CheckPair(o); !s.ok()) return s;
  grpc::SslCredentialsOptions opts;
  if (!o.ca.empty()) {
    auto ca = ReadPem(o.ca, "CA bundle");
    if (!ca.ok()) return ca.status();
    opts.pem_root_certs = *std::move(ca);
  }
  if (!o.cert.empty()) {
    if (absl::Status s = ReadIdentity(o, &opts.pem_cert_chain, &opts.pem_private_key); !s.ok()) return s;
  }
  if (!o.server_name.empty() && args != nullptr) {
    args->SetSslTargetNameOverride(o.server_name);
  }
  return grpc::SslCredentials(opts);
}

std::string DescribeServer(const TlsOptions& o) {
  if (o.plaintext) return "plaintext";
  return o.ca.empty() ? "TLS" : "mutual TLS";
}

}  // namespace eenn::common
