// The kernel costs of cost_model.h.
#include "tools/plan/cost_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sharding/owner_assignment.h"
#include "tools/common/json.h"

namespace normuon::plan {

const char* KernelName(Kernel k) {
  switch (k) {
    case Kernel::kBlend: return "blend";
    case Kernel::kRowStats: return "row_stats";
    case Kernel::kCommitMatrix: return "commit_matrix";
    case Kernel::kCommitAdamw: return "commit_adamw";
    case Kernel::kCopy: return "copy";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// Bytes of the memory-bound kernels (see the header; fp32 = 4 bytes).

int64_t BlendBytes(int64_t elements, int64_t wire) { return elements * (4 + 4 + wire); }

int64_t RowStatsBytes(int64_t elements, int64_t rows, int64_t wire) {
  return elements * wire + rows * (4 + 4 + 2 * 4);
}

int64_t FinishNormsBytes(int64_t global_rows) { return global_rows * 2 * 4; }

int64_t CommitMatrixBytes(int64_t elements, int64_t rows, int64_t wire) {
  return elements * (3 * 4 + wire + 2 * 4) + rows * (4 + 4);
}

int64_t CommitAdamwBytes(int64_t elements) { return elements * (4 * 4 + 3 * 4); }

int64_t CopyBytes(int64_t bytes) { return 2 * bytes; }

// ---------------------------------------------------------------------------------------------
// Rates.

void NsRateTable::Add(int64_t rows, int64_t cols, double tflops) {
  if (rows < 1 || cols < 1 || !(tflops > 0.0) || !std::isfinite(tflops)) return;
  for (Point& p : points_) {
    if (p.rows == rows && p.cols == cols) {
      p.tflops = std::max(p.tflops, tflops);
      return;
    }
  }
  points_.push_back(Point{rows, cols, sharding::Ns5Flops(rows, cols), tflops});
}

double NsRateTable::TflopsFor(int64_t rows, int64_t cols) const {
  if (points_.empty()) return default_tflops_;
  for (const Point& p : points_) {
    if (p.rows == rows && p.cols == cols) return p.tflops;
  }
  // Nodes: distinct FLOP counts, rates of equal counts averaged, ascending.
  std::vector<std::pair<double, double>> nodes;  // (flops, tflops)
  std::vector<Point> sorted = points_;
  std::sort(sorted.begin(), sorted.end(),
            [](const Point& a, const Point& b) { return a.flops < b.flops; });
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    double sum = 0.0;
    while (j < sorted.size() && sorted[j].flops == sorted[i].flops) sum += sorted[j++].tflops;
    nodes.emplace_back(sorted[i].flops, sum / static_cast<double>(j - i));
    i = j;
  }
  const double f = sharding::Ns5Flops(rows, cols);
  if (f <= nodes.front().first) return nodes.front().second;
  if (f >= nodes.back().first) return nodes.back().second;
  for (size_t i = 0; i + 1 < nodes.size(); ++i) {
    const auto& [f0, t0] = nodes[i];
    const auto& [f1, t1] = nodes[i + 1];
    if (f >= f0 && f < f1) {
      const double a = (std::log(f) - std::log(f0)) / (std::log(f1) - std::log(f0));
      return t0 + a * (t1 - t0);
    }
  }
  return nodes.back().second;  // not reached
}

namespace {

// The number object[key], or NaN when it is missing or not a number (a null: a non-finite
// counter, json.h).
double Number(const nlohmann::json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>()
                                               : std::numeric_limits<double>::quiet_NaN();
}

// "RxC" -> rows, cols.
bool ParseShape(absl::string_view text, int64_t* rows, int64_t* cols) {
  const std::vector<absl::string_view> rc = absl::StrSplit(text, 'x');
  return rc.size() == 2 && absl::SimpleAtoi(rc[0], rows) && absl::SimpleAtoi(rc[1], cols) &&
         *rows > 0 && *cols > 0;
}

}  // namespace

absl::Status AddBenchmarkRates(absl::string_view json_text, absl::string_view source,
                               int64_t wire_bytes, KernelRates* rates) {
  absl::StatusOr<nlohmann::json> doc = normuon_tools::ParseJson(json_text);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", doc.status().message()));
  }
  if (!doc->is_object() || !doc->contains("benchmarks") || !(*doc)["benchmarks"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": no \"benchmarks\" array (expected Google Benchmark's JSON output)"));
  }
  // Kernel benchmarks by the first part of their name: bench/cpu_kernel_rates_bench and
  // bench/elementwise_gpu_bench.
  static const std::pair<const char*, Kernel> kKernels[] = {
      {"BM_Blend", Kernel::kBlend},           {"Blend", Kernel::kBlend},
      {"BM_RowStats", Kernel::kRowStats},     {"RowStats", Kernel::kRowStats},
      {"BM_CommitMatrix", Kernel::kCommitMatrix}, {"CommitMatrix", Kernel::kCommitMatrix},
      {"BM_CommitAdamW", Kernel::kCommitAdamw}, {"CommitAdamW", Kernel::kCommitAdamw},
      {"BM_Copy", Kernel::kCopy},
  };
  const absl::string_view want = wire_bytes == 2 ? "bf16" : wire_bytes == 4 ? "fp32" : "";
  auto other_dtype = [&](absl::string_view part) {
    return !want.empty() && (part == "bf16" || part == "fp32") && part != want;
  };
  int used = 0;
  for (const nlohmann::json& b : (*doc)["benchmarks"]) {
    if (!b.is_object() || !b.contains("name") || !b["name"].is_string()) continue;
    if (b.contains("run_type") && b["run_type"] == "aggregate") continue;
    const std::string& name = b["name"].get_ref<const std::string&>();
    const std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
    const double tflops = Number(b, "TFLOP/s");
    const bool tflops_ok = tflops > 0.0 && std::isfinite(tflops);
    int64_t rows = 0, cols = 0;
    if (absl::StartsWith(parts[0], "BM_NewtonSchulz")) {
      if (parts.size() >= 3 && absl::SimpleAtoi(parts[1], &rows) &&
          absl::SimpleAtoi(parts[2], &cols) && rows > 0 && cols > 0 && tflops_ok) {
        rates->ns.Add(rows, cols, tflops);
        ++used;
      }
      continue;
    }
    if (parts[0] == "NS5") {
      if (parts.size() >= 4 && !other_dtype(parts[1]) && ParseShape(parts[3], &rows, &cols) &&
          tflops_ok) {
        rates->ns.Add(rows, cols, tflops);
        ++used;
      }
      continue;
    }
    for (const auto& [prefix, kernel] : kKernels) {
      if (parts[0] != prefix) continue;
      if (kernel != Kernel::kCommitAdamw && parts.size() >= 2 && other_dtype(parts[1])) break;
      const double gb_per_s = Number(b, "GB/s");
      const double gbps =
          std::isnan(gb_per_s) ? Number(b, "bytes_per_second") * 1e-9 : gb_per_s;
      if (gbps > 0.0 && std::isfinite(gbps)) {
        double& slot = rates->gbps[static_cast<int>(kernel)];
        slot = std::max(slot, gbps);
        ++used;
      }
      break;
    }
  }
  if (used == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": no usable benchmark (Newton-Schulz: BM_NewtonSchulz*/ROWS/COLS or "
                "NS5/DTYPE/MODEL/ROWSxCOLS with a \"TFLOP/s\" counter; kernels: BM_Blend, "
                "BM_RowStats, BM_CommitMatrix, BM_CommitAdamW, BM_Copy, Blend/DTYPE, ... with "
                "\"GB/s\"; entries of the other dtype are skipped)"));
  }
  return absl::OkStatus();
}

}  // namespace normuon::plan
