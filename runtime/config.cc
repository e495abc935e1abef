#include "runtime/config.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace normuon {
namespace {

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

bool ValidDType(normuon_dtype_t d) { return d == NORMUON_DTYPE_FP32 || d == NORMUON_DTYPE_BF16; }

bool FiniteNonNegative(float x) { return std::isfinite(x) && x >= 0.0f; }

}  // namespace

absl::Status ValidateGroup(const normuon_group_desc_t& g, absl::string_view where) {
  if (g.kind != NORMUON_GROUP_NORMUON && g.kind != NORMUON_GROUP_ADAMW) {
    return Invalid(absl::StrCat(where, ".kind = ", static_cast<int>(g.kind),
                                " is not NORMUON_GROUP_NORMUON or NORMUON_GROUP_ADAMW"));
  }
  if (!FiniteNonNegative(g.lr)) return Invalid(absl::StrCat(where, ".lr = ", g.lr, " must be finite and >= 0"));
  if (!FiniteNonNegative(g.weight_decay)) {
    return Invalid(absl::StrCat(where, ".weight_decay = ", g.weight_decay, " must be finite and >= 0"));
  }
  if (!(g.beta1 >= 0.0f && g.beta1 < 1.0f)) {
    return Invalid(absl::StrCat(where, ".beta1 = ", g.beta1, " must be in [0, 1)"));
  }
  if (!(g.beta2 >= 0.0f && g.beta2 < 1.0f)) {
    return Invalid(absl::StrCat(where, ".beta2 = ", g.beta2, " must be in [0, 1)"));
  }
  if (!(g.eps > 0.0f && std::isfinite(g.eps))) {
    return Invalid(absl::StrCat(where, ".eps = ", g.eps, " must be finite and > 0"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLrAndWeightDecay(float lr, float weight_decay) {
  if (!FiniteNonNegative(lr)) return Invalid(absl::StrCat("lr = ", lr, " must be finite and >= 0"));
  if (!FiniteNonNegative(weight_decay)) {
    return Invalid(absl::StrCat("weight_decay = ", weight_decay, " must be finite and >= 0"));
  }
  return absl::OkStatus();
}

namespace {

// ns_restart_count and ns_restarts (normuon.h): -1, or a count in [0, NORMUON_MAX_NS_RESTARTS]
// of strictly ascending iteration indices in [1, ns_steps - 1].
absl::Status ValidateRestarts(const normuon_config_t& c) {
  if (c.ns_restart_count == -1) return absl::OkStatus();
  if (c.ns_restart_count < 0 || c.ns_restart_count > NORMUON_MAX_NS_RESTARTS) {
    return Invalid(absl::StrCat("config.ns_restart_count = ", c.ns_restart_count,
                                " must be -1 (the default) or in [0, ", NORMUON_MAX_NS_RESTARTS,
                                "]"));
  }
  if (c.ns_restart_count > 0 && c.ns_restarts == nullptr) {
    return Invalid(absl::StrCat("config.ns_restarts is null but config.ns_restart_count = ",
                                c.ns_restart_count));
  }
  for (int i = 0; i < c.ns_restart_count; ++i) {
    const int32_t at = c.ns_restarts[i];
    if (at < 1 || at >= c.ns_steps) {
      return Invalid(absl::StrCat("config.ns_restarts[", i, "] = ", at,
                                  " is outside the iterations a restart can precede, [1, ",
                                  c.ns_steps - 1, "] for ns_steps = ", c.ns_steps));
    }
    if (i > 0 && at <= c.ns_restarts[i - 1]) {
      return Invalid(absl::StrCat("config.ns_restarts[", i, "] = ", at,
                                  " must be above config.ns_restarts[", i - 1,
                                  "] = ", c.ns_restarts[i - 1], " (strictly ascending)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ResolvedConfig> ResolveConfig(const normuon_config_t& in, const Communicator& comm_ref) {
  const Communicator* comm = &comm_ref;
  // The C edge copied the caller's struct of any version into a whole one (base/versioned_struct.h).
  normuon_config_t c = in;
  if (c.api_version == 0 || c.api_version > NORMUON_API_VERSION) {
    return Invalid(absl::StrCat("config.api_version = ", c.api_version, ", this library has ",
                                NORMUON_API_VERSION));
  }
  if (c.backend != NORMUON_BACKEND_CPU && c.backend != NORMUON_BACKEND_CUDA) {
    return Invalid(absl::StrCat("config.backend = ", static_cast<int>(c.backend),
                                " is not NORMUON_BACKEND_CPU or NORMUON_BACKEND_CUDA"));
  }
  if (c.variant != NORMUON_VARIANT_NORMUON && c.variant != NORMUON_VARIANT_NORMUON_PAPER &&
      c.variant != NORMUON_VARIANT_MUON && c.variant != NORMUON_VARIANT_ADAMUON) {
    return Invalid(absl::StrCat("config.variant = ", static_cast<int>(c.variant), " is unknown"));
  }
  if (c.ns_dtype != NORMUON_NS_DEFAULT && c.ns_dtype != NORMUON_NS_FP32 &&
      c.ns_dtype != NORMUON_NS_BF16 && c.ns_dtype != NORMUON_NS_FP16) {
    return Invalid(absl::StrCat("config.ns_dtype = ", static_cast<int>(c.ns_dtype), " is unknown"));
  }
  if (c.ns_dtype == NORMUON_NS_FP16 && c.backend != NORMUON_BACKEND_CUDA) {
    return Invalid("config.ns_dtype = NORMUON_NS_FP16 needs config.backend = "
                   "NORMUON_BACKEND_CUDA; the CPU backend computes Newton-Schulz in fp32 "
                   "(NORMUON_NS_FP32) or emulates bf16 storage (NORMUON_NS_BF16)");
  }
  if (c.ns_steps < 1 || c.ns_steps > 100) {
    return Invalid(absl::StrCat("config.ns_steps = ", c.ns_steps, " must be in [1, 100]"));
  }
  if (c.ns_method != NORMUON_NS_METHOD_STANDARD && c.ns_method != NORMUON_NS_METHOD_GRAM) {
    return Invalid(absl::StrCat("config.ns_method = ", static_cast<int>(c.ns_method),
                                " is unknown (NORMUON_NS_METHOD_STANDARD or NORMUON_NS_METHOD_GRAM)"));
  }
  NORMUON_RETURN_IF_ERROR(ValidateRestarts(c));
  if (c.ns_symmetric_products != 0 && c.ns_symmetric_products != 1) {
    return Invalid(absl::StrCat("config.ns_symmetric_products = ", c.ns_symmetric_products,
                                " must be 0 (dense products) or 1 (lower-triangle tiles)"));
  }
  if (c.nesterov != 0 && c.nesterov != 1) {
    return Invalid(absl::StrCat("config.nesterov = ", c.nesterov, " must be 0 or 1"));
  }
  if (c.check_finite != 0 && c.check_finite != 1) {
    return Invalid(absl::StrCat("config.check_finite = ", c.check_finite, " must be 0 or 1"));
  }
  if (c.schedule != NORMUON_SCHEDULE_SEQUENTIAL && c.schedule != NORMUON_SCHEDULE_PER_MATRIX &&
      c.schedule != NORMUON_SCHEDULE_BUCKETED) {
    return Invalid(absl::StrCat("config.schedule = ", static_cast<int>(c.schedule), " is unknown"));
  }
  if (c.schedule == NORMUON_SCHEDULE_BUCKETED && c.bucket_bytes == 0) {
    return Invalid("config.bucket_bytes = 0: the bucketed schedule needs buckets of >= 1 byte");
  }
  if (c.owner_policy != NORMUON_OWNER_ROUND_ROBIN && c.owner_policy != NORMUON_OWNER_COST_BALANCED) {
    return Invalid(absl::StrCat("config.owner_policy = ", static_cast<int>(c.owner_policy),
                                " is unknown"));
  }
  if (c.cuda_graph != 0 && c.cuda_graph != 1) {
    return Invalid(absl::StrCat("config.cuda_graph = ", c.cuda_graph, " must be 0 or 1"));
  }
  if (c.cuda_graph == 1 && c.backend != NORMUON_BACKEND_CUDA) {
    return Invalid("config.cuda_graph = 1 needs config.backend = NORMUON_BACKEND_CUDA (a CUDA "
                   "graph replays device work; the CPU backend runs each call to completion)");
  }
  if (c.cuda_graph == 1 && comm->world_size() > 1) {
    return absl::UnimplementedError(absl::StrCat(
        "config.cuda_graph = 1 at world size ", comm->world_size(), " (", comm->Describe(),
        "): graph mode runs single-rank steps only in this version (the in-process device group "
        "synchronizes the host in each collective, which a stream capture cannot hold; capturing "
        "NCCL collectives is left for later)"));
  }
  // The step's buffers are backend memory, and the communicator moves them as they are.
  if (comm->UsesDeviceMemory() && c.backend != NORMUON_BACKEND_CUDA) {
    return Invalid(absl::StrCat(
        "comm: ", comm->Describe(), " moves device memory, but config.backend is CPU; use "
        "NORMUON_BACKEND_CUDA, or a host communicator (normuon_comm_create_inprocess_group)"));
  }
  if (!comm->UsesDeviceMemory() && comm->world_size() > 1 && c.backend == NORMUON_BACKEND_CUDA) {
    return Invalid(absl::StrCat(
        "comm: ", comm->Describe(), " moves host memory, but config.backend is CUDA at world "
        "size ", comm->world_size(), "; the CUDA sharded step needs a device communicator "
        "(normuon_comm_create_nccl, or normuon_comm_create_inprocess_group_ex with "
        "NORMUON_COMM_MEMORY_DEVICE)"));
  }
  if (!(c.ns_eps >= 0.0f && std::isfinite(c.ns_eps))) {
    return Invalid(absl::StrCat("config.ns_eps = ", c.ns_eps,
                                " must be finite and >= 0 (0: the orthogonalizer's own)"));
  }
  if (!(c.ns_norm_scale >= 0.0f && std::isfinite(c.ns_norm_scale))) {
    return Invalid(absl::StrCat("config.ns_norm_scale = ", c.ns_norm_scale,
                                " must be finite and >= 0 (0: the orthogonalizer's own)"));
  }
  if (c.lr_adjust < NORMUON_LR_ADJUST_DEFAULT || c.lr_adjust > NORMUON_LR_ADJUST_RMS) {
    return Invalid(absl::StrCat("config.lr_adjust = ", static_cast<int>(c.lr_adjust),
                                " is unknown"));
  }
  if (c.orthogonalizer < NORMUON_ORTHO_QUINTIC || c.orthogonalizer > NORMUON_ORTHO_CUSTOM) {
    return Invalid(absl::StrCat("config.orthogonalizer = ", static_cast<int>(c.orthogonalizer),
                                " is unknown"));
  }
  if (c.orthogonalizer == NORMUON_ORTHO_CUSTOM) {
    if (c.ns_coefficients == nullptr) {
      return Invalid("config.ns_coefficients is null but config.orthogonalizer is CUSTOM");
    }
    for (int i = 0; i < 3 * c.ns_steps; ++i) {
      if (!std::isfinite(c.ns_coefficients[i])) {
        return Invalid(absl::StrCat("config.ns_coefficients[", i, "] = ", c.ns_coefficients[i],
                                    " is not finite"));
      }
    }
  }
  if (c.neuron_axis != NORMUON_NEURON_ROWS && c.neuron_axis != NORMUON_NEURON_COLUMNS) {
    return Invalid(absl::StrCat("config.neuron_axis = ", static_cast<int>(c.neuron_axis),
                                " is unknown"));
  }
  if (c.neuron_axis == NORMUON_NEURON_COLUMNS && c.variant != NORMUON_VARIANT_NORMUON &&
      c.variant != NORMUON_VARIANT_NORMUON_PAPER) {
    return Invalid(absl::StrCat("config.neuron_axis = COLUMNS needs a NorMuon variant (variant ",
                                static_cast<int>(c.variant),
                                " keeps no per-neuron second moment)"));
  }
  if (c.cautious_weight_decay != 0 && c.cautious_weight_decay != 1) {
    return Invalid(absl::StrCat("config.cautious_weight_decay = ", c.cautious_weight_decay,
                                " must be 0 or 1"));
  }
  ResolvedConfig r;
  normuon_group_desc_t& matrix_group = r.matrix_group;
  normuon_group_desc_t& adamw_group = r.adamw_group;
  normuon_group_desc_init(&matrix_group, NORMUON_GROUP_NORMUON);
  matrix_group.lr = c.lr;
  matrix_group.weight_decay = c.weight_decay;
  matrix_group.beta1 = c.momentum;
  matrix_group.beta2 = c.beta2;
  matrix_group.eps = c.eps;
  NORMUON_RETURN_IF_ERROR(ValidateGroup(matrix_group, "config (NorMuon group)"));
  normuon_group_desc_init(&adamw_group, NORMUON_GROUP_ADAMW);
  adamw_group.lr = c.adamw_lr;
  adamw_group.weight_decay = c.adamw_weight_decay;
  adamw_group.beta1 = c.adamw_beta1;
  adamw_group.beta2 = c.adamw_beta2;
  adamw_group.eps = c.adamw_eps;
  NORMUON_RETURN_IF_ERROR(ValidateGroup(adamw_group, "config (AdamW group: adamw_*)"));

  if (c.backend == NORMUON_BACKEND_CUDA && c.device < 0) {
    return Invalid(absl::StrCat("config.device = ", c.device, " must be >= 0"));
  }
  if (c.ns_dtype == NORMUON_NS_DEFAULT) {
    r.ns_dtype = c.backend == NORMUON_BACKEND_CUDA ? DType::kBF16 : DType::kF32;
  } else {
    r.ns_dtype = c.ns_dtype == NORMUON_NS_BF16   ? DType::kBF16
                 : c.ns_dtype == NORMUON_NS_FP16 ? DType::kF16
                                                 : DType::kF32;
  }
  r.ns_method = c.ns_method == NORMUON_NS_METHOD_GRAM ? NsMethod::kGram : NsMethod::kStandard;
  r.symmetric =
      c.ns_symmetric_products == 1 ? SymmetricProducts::kTiles : SymmetricProducts::kDense;
  if (r.ns_method == NsMethod::kGram) {
    if (c.ns_restart_count < 0) {
      r.restarts =
          DefaultGramRestarts(c.ns_steps, c.orthogonalizer == NORMUON_ORTHO_POLAR_EXPRESS);
    } else if (c.ns_restart_count > 0) {
      r.restarts.assign(c.ns_restarts, c.ns_restarts + c.ns_restart_count);
    }
  }
  c.ns_restart_count = static_cast<int32_t>(r.restarts.size());
  c.ns_restarts = nullptr;  // copied into r.restarts; the caller's array may go away
  const bool polar = c.orthogonalizer == NORMUON_ORTHO_POLAR_EXPRESS;
  if (c.orthogonalizer == NORMUON_ORTHO_CUSTOM) {
    for (int i = 0; i < c.ns_steps; ++i) {
      const float* abc = c.ns_coefficients + 3 * i;
      r.coefficients.push_back({abc[0], abc[1], abc[2]});
    }
  } else {
    r.coefficients = polar ? PolarExpressCoefficients(c.ns_steps) : QuinticCoefficients(c.ns_steps);
  }
  c.ns_coefficients = nullptr;  // copied above; the caller's array may go away
  if (c.ns_eps == 0.0f) c.ns_eps = polar ? 1e-6f : 1e-7f;
  if (c.ns_norm_scale == 0.0f) c.ns_norm_scale = polar ? 1.02f : 1.0f;
  r.config = c;
  return r;
}

namespace {

// desc.pieces (normuon.h, "Several pieces on one rank"): the desc's own piece fields left at
// their defaults, every rectangle in range, resolved into *out (empty when num_pieces is 0).
absl::Status ValidatePieces(ParamKind kind, const normuon_param_desc_t& d, const std::string& who,
                            std::vector<PieceSpec>* out) {
  if (d.num_pieces == 0) return absl::OkStatus();
  if (d.num_pieces < 0) {
    return Invalid(absl::StrCat(who, ": desc.num_pieces = ", d.num_pieces, " must be >= 0"));
  }
  if (kind != ParamKind::kMatrix) {
    return Invalid(absl::StrCat(who, ": desc.pieces is for matrices; an AdamW parameter is held "
                                "as whole rows (num_pieces must be 0)"));
  }
  if (d.pieces == nullptr) {
    return Invalid(absl::StrCat(who, ": desc.pieces is NULL with desc.num_pieces = ",
                                d.num_pieces));
  }
  // The desc's own piece must stay unset: the list is the whole truth.
  const std::pair<const char*, bool> unset[] = {
      {"row_begin", d.row_begin != 0}, {"row_count", d.row_count != 0},
      {"col_begin", d.col_begin != 0}, {"col_count", d.col_count != 0},
      {"ld", d.ld != 0},               {"param", d.param != nullptr},
      {"grad", d.grad != nullptr}};
  for (const auto& [field, set] : unset) {
    if (set) {
      return Invalid(absl::StrCat(who, ": desc.", field, " is set together with desc.pieces (",
                                  d.num_pieces, " pieces): with pieces, give each piece's "
                                  "rectangle and buffers in desc.pieces and leave desc.", field,
                                  " 0"));
    }
  }
  for (int32_t i = 0; i < d.num_pieces; ++i) {
    const normuon_piece_t& q = d.pieces[i];
    const std::string at = absl::StrCat(who, ": desc.pieces[", i, "].");
    if (q.row_begin < 0 || q.row_begin > d.rows) {
      return Invalid(absl::StrCat(at, "row_begin = ", q.row_begin, " is outside [0, ", d.rows,
                                  "]"));
    }
    if (q.row_count < 0 || q.row_count > d.rows - q.row_begin) {
      return Invalid(absl::StrCat(at, "row_count = ", q.row_count, " with row_begin ",
                                  q.row_begin, " does not fit in ", d.rows, " rows"));
    }
    if (q.col_begin < 0 || q.col_begin > d.cols) {
      return Invalid(absl::StrCat(at, "col_begin = ", q.col_begin, " is outside [0, ", d.cols,
                                  "]"));
    }
    if (q.col_count < 0 || q.col_count > d.cols - q.col_begin) {
      return Invalid(absl::StrCat(at, "col_count = ", q.col_count, " with col_begin ",
                                  q.col_begin, " does not fit in ", d.cols, " cols"));
    }
    if (q.col_count == 0 && q.col_begin != 0) {
      return Invalid(absl::StrCat(at, "col_begin = ", q.col_begin,
                                  " with col_count = 0 (every column): give col_count too"));
    }
    PieceSpec p;
    p.row_begin = q.row_begin;
    p.row_count = q.row_count;
    p.col_begin = q.col_count == 0 ? 0 : q.col_begin;
    p.col_count = q.col_count == 0 ? d.cols : q.col_count;
    if (q.ld < 0 || (q.ld != 0 && q.ld < p.col_count)) {
      return Invalid(absl::StrCat(at, "ld = ", q.ld, " must be 0 (= the piece's ", p.col_count,
                                  " columns) or >= it"));
    }
    p.ld = q.ld == 0 ? p.col_count : q.ld;
    if (p.row_count > 0 && p.ld > kMaxElements / p.row_count) {
      return Invalid(absl::StrCat(at, "ld x row_count = ", p.ld, " x ", p.row_count,
                                  " is too large (limit 2^40 elements)"));
    }
    p.param = q.param;
    p.grad = q.grad;
    out->push_back(p);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParamSpec> ValidateParamDesc(ParamKind kind, const normuon_param_desc_t& d,
                                            const std::vector<normuon_group_kind_t>& group_kinds) {
  const char* what = kind == ParamKind::kMatrix ? "register_matrix" : "register_adamw";
  if (d.name == nullptr || d.name[0] == '\0') return Invalid("desc.name is null or empty");
  const std::string name(d.name);
  const std::string who = absl::StrCat("parameter '", name, "'");
  if (d.rows <= 0) return Invalid(absl::StrCat(who, ": desc.rows = ", d.rows, " must be > 0"));
  if (d.cols <= 0) return Invalid(absl::StrCat(who, ": desc.cols = ", d.cols, " must be > 0"));
  if (d.rows > kMaxElements / d.cols) {
    return Invalid(absl::StrCat(who, ": desc.rows x desc.cols = ", d.rows, " x ", d.cols,
                                " is too large (limit 2^40 elements)"));
  }
  if (d.row_begin < 0 || d.row_begin > d.rows) {
    return Invalid(absl::StrCat(who, ": desc.row_begin = ", d.row_begin, " is outside [0, ",
                                d.rows, "]"));
  }
  if (d.row_count < 0 || d.row_count > d.rows - d.row_begin) {
    return Invalid(absl::StrCat(who, ": desc.row_count = ", d.row_count, " with row_begin ",
                                d.row_begin, " does not fit in ", d.rows, " rows"));
  }
  // Columns (normuon.h, "Two-dimensional pieces"): 0 = every column; else a range of cols.
  if (d.col_begin < 0 || d.col_begin > d.cols) {
    return Invalid(absl::StrCat(who, ": desc.col_begin = ", d.col_begin, " is outside [0, ",
                                d.cols, "]"));
  }
  if (d.col_count < 0 || d.col_count > d.cols - d.col_begin) {
    return Invalid(absl::StrCat(who, ": desc.col_count = ", d.col_count, " with col_begin ",
                                d.col_begin, " does not fit in ", d.cols, " cols"));
  }
  if (d.col_count == 0 && d.col_begin != 0) {
    return Invalid(absl::StrCat(who, ": desc.col_begin = ", d.col_begin,
                                " with desc.col_count = 0 (every column): give col_count too"));
  }
  const int64_t col_count = d.col_count == 0 ? d.cols : d.col_count;
  if (d.ld < 0 || (d.ld != 0 && d.ld < col_count)) {
    return Invalid(absl::StrCat(who, ": desc.ld = ", d.ld, " must be 0 (= the piece's ",
                                col_count, " columns) or >= it"));
  }
  const int64_t ld = d.ld == 0 ? col_count : d.ld;
  if (d.row_count > 0 && ld > kMaxElements / d.row_count) {
    return Invalid(absl::StrCat(who, ": desc.ld x desc.row_count = ", ld, " x ", d.row_count,
                                " is too large (limit 2^40 elements)"));
  }
  if (kind != ParamKind::kMatrix && (col_count != d.cols || ld != d.cols)) {
    return Invalid(absl::StrCat(who, ": desc.col_count / desc.ld: an AdamW parameter is held as "
                                "whole rows (col_begin 0, col_count 0 or cols, ld 0 or cols)"));
  }
  // Whether the ranks' pieces tile the parameter exactly is checked across ranks at finalize.
  if (!ValidDType(d.param_dtype)) {
    return Invalid(absl::StrCat(who, ": desc.param_dtype = ", static_cast<int>(d.param_dtype),
                                " is not FP32 or BF16"));
  }
  if (!ValidDType(d.grad_dtype)) {
    return Invalid(absl::StrCat(who, ": desc.grad_dtype = ", static_cast<int>(d.grad_dtype),
                                " is not FP32 or BF16"));
  }
  if (d.group < 0 || d.group >= static_cast<int32_t>(group_kinds.size())) {
    return Invalid(absl::StrCat(who, ": desc.group = ", d.group, " is not a group"));
  }
  const normuon_group_kind_t want = kind == ParamKind::kMatrix ? NORMUON_GROUP_NORMUON : NORMUON_GROUP_ADAMW;
  if (group_kinds[d.group] != want) {
    return Invalid(absl::StrCat(who, ": desc.group = ", d.group, " is a ",
                                want == NORMUON_GROUP_NORMUON ? "AdamW" : "NorMuon",
                                " group; ", what, " needs a ",
                                want == NORMUON_GROUP_NORMUON ? "NorMuon" : "AdamW", " group"));
  }
  std::vector<int64_t> splits;
  if (d.num_row_splits < 0 || (d.num_row_splits > 0 && d.row_splits == nullptr)) {
    return Invalid(absl::StrCat(who, ": desc.num_row_splits = ", d.num_row_splits,
                                " with row_splits ", d.row_splits == nullptr ? "NULL" : "set"));
  }
  if (d.num_row_splits > 0) {
    if (kind != ParamKind::kMatrix) {
      return Invalid(absl::StrCat(who, ": desc.row_splits is for matrices; AdamW is elementwise"));
    }
    if (d.num_row_splits > d.rows) {
      return Invalid(absl::StrCat(who, ": desc.num_row_splits = ", d.num_row_splits,
                                  " exceeds rows = ", d.rows));
    }
    int64_t sum = 0;
    for (int32_t i = 0; i < d.num_row_splits; ++i) {
      if (d.row_splits[i] <= 0 || d.row_splits[i] > d.rows) {
        return Invalid(absl::StrCat(who, ": desc.row_splits[", i, "] = ", d.row_splits[i],
                                    " must be in [1, rows]"));
      }
      sum += d.row_splits[i];
      splits.push_back(d.row_splits[i]);
    }
    if (sum != d.rows) {
      return Invalid(absl::StrCat(who, ": desc.row_splits sum to ", sum, ", not rows = ", d.rows));
    }
  }
  if (d.num_heads < 0) {
    return Invalid(absl::StrCat(who, ": desc.num_heads = ", d.num_heads, " must be >= 0"));
  }
  if (d.num_heads > 0) {
    if (kind != ParamKind::kMatrix) {
      return Invalid(absl::StrCat(who, ": desc.num_heads is for matrices; AdamW is elementwise"));
    }
    if (d.num_row_splits > 0) {
      return Invalid(absl::StrCat(who, ": desc.num_heads = ", d.num_heads,
                                  " together with desc.row_splits: give one of them (num_heads "
                                  "is a shorthand for equal row_splits)"));
    }
    if (d.rows % d.num_heads != 0) {
      return Invalid(absl::StrCat(who, ": desc.num_heads = ", d.num_heads,
                                  " does not divide rows = ", d.rows));
    }
    splits.assign(static_cast<size_t>(d.num_heads), d.rows / d.num_heads);
  }
  if (splits.empty()) splits.push_back(d.rows);
  std::vector<PieceSpec> pieces;
  NORMUON_RETURN_IF_ERROR(ValidatePieces(kind, d, who, &pieces));
  ParamSpec p;
  p.kind = kind;
  p.name = name;
  p.splits = std::move(splits);
  p.rows = d.rows;
  p.cols = d.cols;
  p.row_begin = d.row_begin;
  p.row_count = d.row_count;
  p.columns_given = d.col_count != 0;
  p.col_begin = d.col_count == 0 ? 0 : d.col_begin;
  p.col_count = col_count;
  p.ld = ld;
  p.param = d.param;
  p.param_dtype = static_cast<DType>(d.param_dtype);
  p.grad = d.grad;
  p.grad_dtype = static_cast<DType>(d.grad_dtype);
  p.group = d.group;
  p.pieces = std::move(pieces);
  if (!p.pieces.empty()) p.columns_given = true;  // the records carry each piece's columns
  return p;
}

PieceSpec PieceOf(const ParamSpec& p, size_t piece) {
  if (!p.pieces.empty()) return p.pieces[piece];
  return PieceSpec{p.row_begin, p.row_count, p.col_begin, p.col_count, p.ld, p.param, p.grad};
}

std::vector<PieceSpec> PiecesOf(const ParamSpec& p) {
  if (!p.pieces.empty()) return p.pieces;
  return {PieceOf(p, 0)};
}

int64_t LocalRows(const ParamSpec& p) {
  int64_t rows = 0;
  for (const PieceSpec& q : PiecesOf(p)) rows += q.row_count;
  return rows;
}

int64_t LocalElements(const ParamSpec& p) {
  int64_t elements = 0;
  for (const PieceSpec& q : PiecesOf(p)) elements += q.row_count * q.col_count;
  return elements;
}

double ShapeFactor(normuon_variant_t variant, normuon_lr_adjust_t adjust, int64_t rows,
                   int64_t cols) {
  const double m = static_cast<double>(rows), n = static_cast<double>(cols);
  const double spectral = std::sqrt(std::max(1.0, m / n));
  const double rms = 0.2 * std::sqrt(std::max(m, n));
  switch (adjust) {
    case NORMUON_LR_ADJUST_NONE:
      return 1.0;
    case NORMUON_LR_ADJUST_SPECTRAL:
      return spectral;
    case NORMUON_LR_ADJUST_RMS:
      return rms;
    case NORMUON_LR_ADJUST_DEFAULT:
    case NORMUON_LR_ADJUST_MIN_ENUM:
    case NORMUON_LR_ADJUST_MAX_ENUM:  // rejected at create
      break;
  }
  switch (variant) {
    case NORMUON_VARIANT_NORMUON_PAPER:
      return 0.2 * std::sqrt(m * n);
    case NORMUON_VARIANT_ADAMUON:
      return rms;
    default:
      return spectral;
  }
}
}  // namespace normuon
