// fuzz_input.cc: the failure path shared by the fuzzers' property checks.
#include "fuzz/fuzz_input.h"

#include <cstdio>
#include <cstdlib>

namespace normuon_fuzz {

void PropertyFailed(const char* file, int line, const char* what) {
  std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", file, line, what);
  std::fflush(stderr);
  std::abort();
}

}  // namespace normuon_fuzz
