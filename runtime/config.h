// Configuration and descriptor validation (docs/ARCHITECTURE.md section 7, "Errors are values"):
// every check of a caller's normuon_config_t, group and parameter descriptor, each failure naming
// the field, and what the runtime derives from a valid config (the Newton-Schulz dtype and
// coefficients, the two default groups, the shape factor). Pure functions; nothing here holds
// state.
#ifndef NORMUON_RUNTIME_CONFIG_H_
#define NORMUON_RUNTIME_CONFIG_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/param_kind.h"
#include "comm/communicator.h"
#include "kernels/backend.h"
#include "normuon/normuon.h"

namespace normuon {

// A config checked against the communicator it will run over, with its defaults resolved.
struct ResolvedConfig {
  // Every field valid; ns_eps and ns_norm_scale resolved from 0 to the orthogonalizer's own;
  // ns_coefficients null (copied into `coefficients`, the caller's array may go away).
  normuon_config_t config;
  DType ns_dtype = DType::kF32;                      // ns_dtype DEFAULT resolved per backend
  std::vector<std::array<float, 3>> coefficients;    // (a, b, c) per Newton-Schulz iteration
  normuon_group_desc_t matrix_group, adamw_group;    // groups 0 and 1, from the config's fields
  NsMethod ns_method = NsMethod::kStandard;
  std::vector<int32_t> restarts;  // Gram: resolved (ns_restart_count -1 = the default)
  SymmetricProducts symmetric = SymmetricProducts::kDense;  // config.ns_symmetric_products
};


// `config` is a whole, current normuon_config_t (the C edge copies older sizes first). Fails
// with InvalidArgument naming the first bad field, or Unimplemented for a combination this
// version does not run (CUDA graph mode at world size > 1).
absl::StatusOr<ResolvedConfig> ResolveConfig(const normuon_config_t& config,
                                             const Communicator& comm);

// One hyper-parameter group; `where` names it in messages ("group", "config (AdamW group)").
absl::Status ValidateGroup(const normuon_group_desc_t& group, absl::string_view where);

// The lr and weight decay of normuon_set_group_lr: finite and >= 0.
absl::Status ValidateLrAndWeightDecay(float lr, float weight_decay);

// A registration as the runtime keeps it, after ValidateParamDesc.
// One rectangle of a matrix on this rank (normuon_piece_t), resolved: col_count and ld as
// ParamSpec's (every column: col_begin 0, col_count = cols; ld >= col_count).
struct PieceSpec {
  int64_t row_begin = 0, row_count = 0, col_begin = 0, col_count = 0, ld = 0;
  void* param = nullptr;
  const void* grad = nullptr;
};

struct ParamSpec {
  ParamKind kind = ParamKind::kMatrix;
  std::string name;
  int64_t rows = 0, cols = 0, row_begin = 0, row_count = 0;
  // The piece's columns [col_begin, col_begin + col_count) and the leading dimension of param and
  // grad, resolved: the row-only layout is col_begin 0, col_count = ld = cols (also for a rank
  // with no rows). `columns_given` records whether the descriptor set col_count (the registration
  // record then carries the piece; otherwise it says "every column").
  int64_t col_begin = 0, col_count = 0, ld = 0;
  bool columns_given = false;
  void* param = nullptr;
  DType param_dtype = DType::kF32;
  const void* grad = nullptr;
  DType grad_dtype = DType::kF32;
  int32_t group = 0;
  std::vector<int64_t> splits;  // row blocks (matrices); one block of `rows` when not split
  // desc.pieces (several rectangles on this rank), in the caller's order; empty: the one piece
  // of the fields above. With pieces, the fields above describe no piece (row_count 0, every
  // column, null pointers) and `pieces` is the whole truth.
  std::vector<PieceSpec> pieces;
};

// The pieces of a parameter on this rank: `pieces`, or the one piece of the fields (which may
// hold no row). PieceOf is one of them without allocating (binds may run inside a step).
std::vector<PieceSpec> PiecesOf(const ParamSpec& p);
PieceSpec PieceOf(const ParamSpec& p, size_t piece);
// The rows and the elements this rank holds of a parameter (summed over its pieces): what its
// state is sized by.
int64_t LocalRows(const ParamSpec& p);
int64_t LocalElements(const ParamSpec& p);

// Checks a descriptor on its own (shape, rows, dtypes, group and its kind, row splits):
// `group_kinds` lists the kind of every group that exists. What needs the other registrations
// (a duplicate name) or the backend (pointer checks) is the runtime's.
absl::StatusOr<ParamSpec> ValidateParamDesc(ParamKind kind, const normuon_param_desc_t& desc,
                                            const std::vector<normuon_group_kind_t>& group_kinds);

// The update's shape factor of a matrix block of rows x cols (normuon.h, normuon_lr_adjust_t;
// docs/ARCHITECTURE.md section 1, "Variants").
double ShapeFactor(normuon_variant_t variant, normuon_lr_adjust_t adjust, int64_t rows,
                   int64_t cols);

}  // namespace normuon

#endif  // NORMUON_RUNTIME_CONFIG_H_
