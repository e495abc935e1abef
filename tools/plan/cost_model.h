// cost_model.h: the planner's cost of kernels (step_model.h): the bytes each memory-bound kernel
// reads and writes, and the measured rates (Newton-Schulz TFLOP/s per shape, kernel GB/s) read
// from Google Benchmark JSON.
#ifndef NORMUON_TOOLS_PLAN_COST_MODEL_H_
#define NORMUON_TOOLS_PLAN_COST_MODEL_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace normuon::plan {

// ---------------------------------------------------------------------------------------------
// Bytes each memory-bound kernel reads plus writes. Parameters, gradients, momentum, v and Adam
// moments are fp32 (4 bytes); U and O are in the wire dtype (wire = 2 for bf16, 4 for fp32).
// The rate benchmark (bench/cpu_kernel_rates_bench) divides these same counts by its time, so a
// GB/s it reports means exactly what the simulation divides by.

// Blend: G and M read, U written.
int64_t BlendBytes(int64_t elements, int64_t wire);
// Row statistics: O read; per row v read, v_new written, two slots written.
int64_t RowStatsBytes(int64_t elements, int64_t rows, int64_t wire);
// Norms from the summed slots: two floats read per global row.
int64_t FinishNormsBytes(int64_t global_rows);
// Matrix commit: G, M, O and W read (three fp32 arrays and O), M and W written; per row v_new
// read and v written.
int64_t CommitMatrixBytes(int64_t elements, int64_t rows, int64_t wire);
// AdamW commit: G, m, v and W read, m, v and W written.
int64_t CommitAdamwBytes(int64_t elements);
// A copy of `bytes` (message packing, in-process exchanges): read once, written once.
int64_t CopyBytes(int64_t bytes);

// ---------------------------------------------------------------------------------------------
// Kernel rates.

enum class Kernel { kBlend = 0, kRowStats, kCommitMatrix, kCommitAdamw, kCopy };
inline constexpr int kKernelCount = 5;
// "blend", "row_stats", "commit_matrix", "commit_adamw", "copy".
const char* KernelName(Kernel k);

// Newton-Schulz TFLOP/s by shape. A shape that was measured gets its own rate (the best of its
// entries); any other shape gets the rate interpolated linearly in log(FLOPs) between the
// nearest measured FLOP counts below and above (shapes of equal FLOPs averaged), clamped to the
// smallest or largest measured one outside that range; with nothing measured, the default.
class NsRateTable {
 public:
  explicit NsRateTable(double default_tflops = 600.0) : default_tflops_(default_tflops) {}
  void set_default_tflops(double t) { default_tflops_ = t; }
  double default_tflops() const { return default_tflops_; }
  // rows, cols >= 1, tflops > 0 (others are ignored). Keeps the largest rate per shape.
  void Add(int64_t rows, int64_t cols, double tflops);
  double TflopsFor(int64_t rows, int64_t cols) const;
  bool empty() const { return points_.empty(); }

  struct Point {
    int64_t rows, cols;
    double flops, tflops;
  };
  const std::vector<Point>& points() const { return points_; }

 private:
  double default_tflops_;
  std::vector<Point> points_;
};

struct KernelRates {
  NsRateTable ns;
  double mem_gbps = 3000.0;                 // any memory-bound kernel without its own rate
  std::array<double, kKernelCount> gbps{};  // per kernel; 0 = mem_gbps
  std::string source = "defaults";          // where the rates came from, for the report

  double Gbps(Kernel k) const {
    const double g = gbps[static_cast<int>(k)];
    return g > 0.0 ? g : mem_gbps;
  }
};

// Reads a Google Benchmark JSON document (`--benchmark_format=json` or `--benchmark_out`) into
// rates. Newton-Schulz points: "BM_NewtonSchulz*/ROWS/COLS..." (the CPU benchmark) or
// "NS5/DTYPE/MODEL/ROWSxCOLS/..." (bench/newton_schulz_gpu_bench) with a "TFLOP/s" counter.
// Kernel rates: "BM_Blend", "BM_RowStats", "BM_CommitMatrix", "BM_CommitAdamW", "BM_Copy"
// (bench/cpu_kernel_rates_bench) or "Blend/DTYPE/...", "RowStats/...", "CommitMatrix/...",
// "CommitAdamW/..." (bench/elementwise_gpu_bench, whose byte counts are the *Bytes above) with a
// "GB/s" counter (or Google Benchmark's bytes_per_second). Entries naming a dtype ("bf16",
// "fp32") other than wire_bytes' are skipped (AdamW has no wire dtype; wire_bytes 0 takes all).
// The best entry per shape or kernel wins (repeated runs on a loaded machine only get slower);
// aggregate rows (mean, median, stddev) are skipped. Fails on malformed JSON, a document without
// a "benchmarks" array, or one with no usable entry; source names the file in messages.
absl::Status AddBenchmarkRates(absl::string_view json_text, absl::string_view source,
                               int64_t wire_bytes, KernelRates* rates);

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_COST_MODEL_H_
