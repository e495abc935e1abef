// gpu_regions.h: Google Benchmark's loop over the event-timed regions of a GPU benchmark
// (gpu_ceilings.h's RegionTimer), shared by the GPU benchmarks. Host code for the C++ compiler,
// kept out of gpu_ceilings.h, which nvcc compiles.
#ifndef NORMUON_BENCH_GPU_REGIONS_H_
#define NORMUON_BENCH_GPU_REGIONS_H_

#include <string>

#include "absl/status/statusor.h"
#include "bench/gpu_ceilings.h"
#include "benchmark/benchmark.h"

namespace normuon_bench {

// Runs one region per benchmark iteration and reports one call's seconds as the iteration's
// manual time. Returns the sum of those seconds (iterations / sum = the rate of the mean call),
// or a negative value after SkipWithError when a region failed.
inline double TimeRegions(benchmark::State& state, RegionTimer& regions) {
  double total_seconds = 0.0;
  for (auto _ : state) {
    absl::StatusOr<double> seconds = regions.Region();
    if (!seconds.ok()) {
      state.SkipWithError(std::string(seconds.status().message()).c_str());
      return -1.0;
    }
    state.SetIterationTime(*seconds);
    total_seconds += *seconds;
  }
  return total_seconds;
}

}  // namespace normuon_bench

#endif  // NORMUON_BENCH_GPU_REGIONS_H_
