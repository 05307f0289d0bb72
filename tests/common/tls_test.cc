// Credential construction from flags: what is refused, and why.
#include "common/tls.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "tests/test_util.h"

namespace eenn::common {
namespace {

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const std::string cmd = std::string(EENN_SOURCE_DIR) + "/tools/make-certs.sh " + dir_->path() + " node";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    testing::WriteAll(dir_->Join("junk.pem"), "not a certificate\n");
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string P(const std::string& f) { return dir_->Join(f); }
  static testing::TempDir* dir_;
};
testing::TempDir* TlsTest::dir_ = nullptr;

TEST_F(TlsTest, ServerNeedsCertificatesOrAnExplicitPlaintext) {
  TlsOptions none;
  auto s = MakeServerCredentials(none);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("--plaintext"), std::string::npos) << s.status();

  TlsOptions plain;
  plain.plaintext = true;
  EXPECT_TRUE(MakeServerCredentials(plain).ok());
  EXPECT_EQ(DescribeServer(plain), "plaintext");
  plain.cert = P("node.pem");
  EXPECT_EQ(MakeServerCredentials(plain).status().code(), absl::StatusCode::kInvalidArgument);

  TlsOptions tls;
  tls.cert = P("node.pem");
  EXPECT_EQ(MakeServerCredentials(tls).status().code(), absl::StatusCode::kInvalidArgument);  // no key
  tls.key = P("node.key");
  ASSERT_TRUE(MakeServerCredentials(tls).ok());
  EXPECT_EQ(DescribeServer(tls), "TLS");
  tls.ca = P("ca.pem");
  ASSERT_TRUE(MakeServerCredentials(tls).ok());
  EXPECT_EQ(DescribeServer(tls), "mutual TLS");

  tls.ca = P("missing.pem");
  EXPECT_EQ(MakeServerCredentials(tls).status().code(), absl::StatusCode::kNotFound);
  tls.ca = P("junk.pem");
  auto junk = MakeServerCredentials(tls);
  EXPECT_EQ(junk.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(junk.status().message().find("junk.pem"), std::string::npos) << junk.status();
}

TEST_F(TlsTest, ChannelCredentials) {
  grpc::ChannelArguments args;
  TlsOptions plain;
  plain.plaintext = true;
  EXPECT_TRUE(MakeChannelCredentials(plain, &args).ok());
  plain.ca = P("ca.pem");
  EXPECT_EQ(MakeChannelCredentials(plain, &args).status().code(), absl::StatusCode::kInvalidArgument);

  TlsOptions tls;  // system roots, no client certificate
  EXPECT_TRUE(MakeChannelCredentials(tls, &args).ok());
  tls.ca = P("ca.pem");
  tls.key = P("node.key");
  EXPECT_EQ(MakeChannelCredentials(tls, &args).status().code(), absl::StatusCode::kInvalidArgument);
  tls.cert = P("node.pem");
  tls.server_name = "node";
  EXPECT_TRUE(MakeChannelCredentials(tls, &args).ok());
  tls.cert = P("junk.pem");
  EXPECT_EQ(MakeChannelCredentials(tls, &args).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace eenn::common
