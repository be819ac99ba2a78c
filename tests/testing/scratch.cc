#include "tests/testing/scratch.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "gtest/gtest.h"

namespace duet::testing {
namespace {

void RemoveScratch() {
  std::error_code ec;
  std::filesystem::remove_all(ScratchModelsDir(), ec);
  // gtest's UnitTest singleton outlives this handler: it was constructed
  // before ScratchDir() first ran, so its destructor runs after us.
  if (::testing::UnitTest::GetInstance()->Failed()) {
    std::cerr << "test scratch kept for the failure: " << ScratchDir() << "\n";
    return;
  }
  std::filesystem::remove_all(ScratchDir(), ec);
}

}  // namespace

const std::string& ScratchDir() {
  static const std::string* dir = [] {
    std::string root = ::testing::TempDir();
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    auto* d = new std::string(root + "/duet_test_" + std::to_string(getpid()));
    std::error_code ec;
    std::filesystem::create_directories(*d + "/models", ec);
    if (ec) ADD_FAILURE() << "cannot create " << *d << ": " << ec.message();
    std::atexit(RemoveScratch);
    return d;
  }();
  return *dir;
}

const std::string& ScratchModelsDir() {
  static const std::string* dir = new std::string(ScratchDir() + "/models");
  return *dir;
}

}  // namespace duet::testing
