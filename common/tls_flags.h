// The TLS flags shared by every eenn binary that serves or calls gRPC:
//   --plaintext        no transport security (must be chosen explicitly)
//   --tls_cert/--tls_key  this endpoint's PEM certificate chain and key
//                      (a daemon's server identity; a caller's client
//                      certificate for mutual TLS)
//   --tls_ca           PEM CA bundle: a daemon requires client certificates
//                      chaining to it; a caller verifies the server against it
//   --tls_server_name  caller: the name the server's certificate must carry
#ifndef EENN_COMMON_TLS_FLAGS_H_
#define EENN_COMMON_TLS_FLAGS_H_

#include "common/tls.h"

namespace eenn::common {

TlsOptions TlsFromFlags();

}  // namespace eenn::common

#endif  // EENN_COMMON_TLS_FLAGS_H_
