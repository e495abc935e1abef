// golden_runner.cc: runs a golden case through the C API; see golden_runner.h.
#include "tools/golden_runner.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/common/api_calls.h"
#include "tools/common/api_flags.h"
#include "tools/common/param_buffers.h"

namespace normuon_tools {
namespace {

#define RETURN_IF_API_ERROR(rt, call)                                              \
  do {                                                                             \
    const normuon_status_t api_status_ = (call);                                   \
    if (api_status_ != NORMUON_SUCCESS) return ApiError((rt), #call, api_status_); \
  } while (0)

std::vector<float> ToFloat(const std::vector<double>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = static_cast<float>(values[i]);
  return out;
}

struct StateSpec {
  const char* golden_name;
  normuon_state_kind_t kind;
};

// The final-state arrays of a kind of case and the C API state each one is read from.
std::vector<StateSpec> StateSpecs(GoldenKind kind) {
  if (kind == GoldenKind::kNormuon) {
    return {{"momentum_final", NORMUON_STATE_MOMENTUM},
            {"second_moment_final", NORMUON_STATE_SECOND_MOMENT}};
  }
  return {{"exp_avg_final", NORMUON_STATE_EXP_AVG}, {"exp_avg_sq_final", NORMUON_STATE_EXP_AVG_SQ}};
}

double StateTolerance(const Tolerances& tol, normuon_state_kind_t kind) {
  switch (kind) {
    case NORMUON_STATE_MOMENTUM:
      return tol.momentum;
    case NORMUON_STATE_SECOND_MOMENT:
      return tol.second_moment;
    default:
      return tol.adam_state;
  }
}

std::string ShortName(const std::string& state_name) {
  static const char kSuffix[] = "_final";
  const size_t n = sizeof(kSuffix) - 1;
  if (state_name.size() > n && state_name.compare(state_name.size() - n, n, kSuffix) == 0) {
    return state_name.substr(0, state_name.size() - n);
  }
  return state_name;
}

}  // namespace

Precision EffectivePrecision(normuon_backend_t backend, normuon_ns_dtype_t ns_dtype) {
  return EffectiveNsDtype(backend, ns_dtype) == NORMUON_NS_BF16 ? Precision::kBf16
                                                                 : Precision::kFp32;
}

Tolerances TolerancesFor(const RunOptions& options) {
  Tolerances tol = DefaultTolerances(EffectivePrecision(options.backend, options.ns_dtype));
  if (options.update_tol.has_value()) tol.update = *options.update_tol;
  return tol;
}

bool ToolsHaveCuda() {
#ifdef NORMUON_WITH_CUDA
  return true;
#else
  return false;
#endif
}

double CaseResult::max_update_rel() const {
  double worst = 0.0;
  for (const StepCheck& s : steps) {
    if (!(s.error.rel_error <= worst)) worst = s.error.rel_error;  // NaN propagates
  }
  return worst;
}

int CaseResult::worst_step() const {
  int worst = -1;
  double value = -1.0;
  for (const StepCheck& s : steps) {
    if (!(s.error.rel_error <= value)) {
      value = s.error.rel_error;
      worst = s.step;
    }
  }
  return worst;
}

double CaseResult::max_bound_use() const {
  double worst = 0.0;
  for (const StepCheck& s : steps) {
    if (!(s.error.bound_use <= worst)) worst = s.error.bound_use;
  }
  return worst;
}

std::string CaseResult::Summary() const {
  std::string line = absl::StrFormat(
      "%-24s %-7s %6dx%-6d %s  update max_rel %.3e (step %d, "
      "%.2f of bound, tol %.1e)",
      name, GoldenKindName(kind), rows, cols, PrecisionName(precision), max_update_rel(),
      worst_step(), max_bound_use(), tolerances.update);
  for (const StateCheck& s : states) {
    absl::StrAppend(&line, absl::StrFormat("  %s %.3e%s", ShortName(s.name), s.error.rel_error,
                                           s.error.pass ? "" : " (over)"));
  }
  absl::StrAppend(&line, pass ? "  PASS" : "  FAIL");
  return line;
}

absl::StatusOr<CaseResult> RunGoldenCase(const GoldenCase& golden, const RunOptions& options) {
  if (options.backend == NORMUON_BACKEND_CUDA && !normuon_has_cuda()) {
    return absl::UnimplementedError("the normuon library was built without the CUDA backend");
  }
  const bool is_matrix = golden.kind == GoldenKind::kNormuon;
  const size_t n = static_cast<size_t>(golden.param_init.size());
  // ParseGolden guarantees these; a case built in code might not.
  if (n == 0 || golden.param_init.values.size() != n || golden.steps < 1 ||
      golden.grads.size() < static_cast<size_t>(golden.steps) ||
      golden.params.size() < static_cast<size_t>(golden.steps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("case '", golden.name, "' is incomplete (param_init, grads or params)"));
  }
  for (int s = 0; s < golden.steps; ++s) {
    if (golden.grads[s].values.size() != n || golden.params[s].values.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat("case '", golden.name, "' step ", s,
                                                     ": array size differs from param_init"));
    }
  }

  CaseResult result;
  result.name = golden.name;
  result.kind = golden.kind;
  result.rows = golden.rows();
  result.cols = golden.cols();
  result.precision = EffectivePrecision(options.backend, options.ns_dtype);
  result.tolerances = TolerancesFor(options);

  normuon_config_t config;
  normuon_config_init(&config);
  config.backend = options.backend;
  config.device = options.device;
  config.ns_dtype = options.ns_dtype;
  if (is_matrix) {
    config.lr = static_cast<float>(golden.lr);
    config.momentum = static_cast<float>(golden.beta1);
    config.beta2 = static_cast<float>(golden.beta2);
    config.weight_decay = static_cast<float>(golden.weight_decay);
    config.eps = static_cast<float>(golden.eps);
    config.nesterov = golden.nesterov ? 1 : 0;
    config.ns_steps = golden.ns_steps;
  } else {
    config.adamw_lr = static_cast<float>(golden.lr);
    config.adamw_beta1 = static_cast<float>(golden.beta1);
    config.adamw_beta2 = static_cast<float>(golden.beta2);
    config.adamw_eps = static_cast<float>(golden.eps);
    config.adamw_weight_decay = static_cast<float>(golden.weight_decay);
  }

  normuon_runtime_t rt = 0;
  RETURN_IF_API_ERROR(0, normuon_create(&config, 0, &rt));
  RuntimeGuard guard(rt);

  absl::StatusOr<std::unique_ptr<ParamBuffers>> buffers_or =
      ParamBuffers::Make(options.backend, options.device, static_cast<int64_t>(n));
  if (!buffers_or.ok()) return buffers_or.status();
  ParamBuffers& buffers = **buffers_or;
  std::vector<float> before = ToFloat(golden.param_init.values);
  absl::Status status = buffers.SetParam(before.data(), static_cast<int64_t>(n));
  if (!status.ok()) return status;

  // The case as a one-entry shape list: one matrix (NorMuon) or one AdamW parameter.
  ModelShape entry;
  entry.name = golden.name;
  entry.rows = golden.rows();
  entry.cols = golden.cols();
  entry.kind = is_matrix ? normuon::ParamKind::kMatrix : normuon::ParamKind::kAdamW;
  normuon_param_t param = -1;
  status = RegisterEntry(rt, entry, normuon::sharding::RowShard{0, entry.rows}, buffers.param(),
                         buffers.grad(), &param);
  if (!status.ok()) return status;
  RETURN_IF_API_ERROR(rt, normuon_finalize(rt));

  // lr and wd of group 0 (the NorMuon group) per call; an AdamW case keeps the config's values.
  const float step_lr = is_matrix ? static_cast<float>(golden.lr) : -1.0f;
  const float step_wd = is_matrix ? static_cast<float>(golden.weight_decay) : -1.0f;
  std::vector<float> after;
  bool pass = true;
  for (int s = 0; s < golden.steps; ++s) {
    const std::vector<float> grad = ToFloat(golden.grads[s].values);
    status = buffers.SetGrad(grad.data(), static_cast<int64_t>(n));
    if (!status.ok()) return status;
    RETURN_IF_API_ERROR(rt, normuon_step(rt, step_lr, step_wd, nullptr));
    normuon_step_info_t info;
    normuon_step_info_init(&info);
    RETURN_IF_API_ERROR(rt, normuon_step_result(rt, &info));
    if (info.last_skipped != 0) {
      return absl::InternalError(absl::StrCat("case '", golden.name, "' step ", s,
                                              ": the runtime skipped the step (non-finite "
                                              "gradient reported for parameter ",
                                              info.nonfinite_param, ")"));
    }
    after.resize(n);
    status = buffers.GetParam(after.data(), static_cast<int64_t>(n));
    if (!status.ok()) return status;
    const std::vector<double>& ref_before =
        s == 0 ? golden.param_init.values : golden.params[s - 1].values;
    StepCheck check;
    check.step = s;
    check.error = CompareUpdate(before, after, ref_before, golden.params[s].values,
                                result.tolerances.update, result.tolerances.floor_factor);
    pass = pass && check.error.pass;
    result.steps.push_back(check);
    before.swap(after);
  }

  for (const StateSpec& spec : StateSpecs(golden.kind)) {
    const GoldenArray* ref = golden.FindState(spec.golden_name);
    if (ref == nullptr || ref->values.size() != static_cast<size_t>(ref->size())) continue;
    uint64_t bytes = 0;
    RETURN_IF_API_ERROR(rt, normuon_state_size(rt, param, spec.kind, &bytes));
    const uint64_t expected = static_cast<uint64_t>(ref->size()) * sizeof(float);
    if (bytes != expected) {
      return absl::InternalError(absl::StrCat("case '", golden.name, "': normuon_state_size(",
                                              spec.golden_name, ") is ", bytes, " bytes, expected ",
                                              expected, " (", ref->rows, "x", ref->cols, " fp32)"));
    }
    std::vector<float> ours(ref->size());
    RETURN_IF_API_ERROR(rt, normuon_get_state(rt, param, spec.kind, ours.data(), bytes));
    StateCheck check;
    check.name = spec.golden_name;
    check.error = CompareState(ours, ref->values, StateTolerance(result.tolerances, spec.kind));
    pass = pass && check.error.pass;
    result.states.push_back(check);
  }
  result.pass = pass;
  return result;
}

}  // namespace normuon_tools
