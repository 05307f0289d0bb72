// The tiny registered backbone (tests/test_util.h) as an early-exit network
// with one exit at layer 1: the model of the engine and service unit tests.
#ifndef EENN_TESTS_TINY_NET_H_
#define EENN_TESTS_TINY_NET_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>

#include "common/eenn_model.h"
#include "tests/test_util.h"

namespace eenn::testing {

// Perturbed with `seed`; null, with a test failure, if it cannot be built.
inline std::shared_ptr<common::EarlyExitNet> TinyNet(uint64_t seed) {
  RegisterTinyBackbone();
  common::ModelSpec spec;
  spec.architecture = "test_tiny";
  spec.exit_layers = {1};
  auto net = common::EarlyExitNet::Create(spec);
  if (!net.ok()) {
    ADD_FAILURE() << net.status();
    return nullptr;
  }
  Perturb(**net, seed);
  return *net;
}

}  // namespace eenn::testing

#endif  // EENN_TESTS_TINY_NET_H_
