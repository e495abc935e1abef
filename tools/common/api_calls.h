// api_calls.h: C API calls the tools make the same way: the error of a failed call, a runtime
// destroyed with its scope, and the registration of one entry of a model's shape list
// (normuon_run, golden_check's runner, the step benchmark). Header-
// only, so that //tools:tool_common does not link the library: the binaries that call the C API
// link //capi themselves.
#ifndef NORMUON_TOOLS_COMMON_API_CALLS_H_
#define NORMUON_TOOLS_COMMON_API_CALLS_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "normuon/normuon.h"
#include "sharding/shard.h"
#include "tools/model_shapes.h"

namespace normuon_tools {

// "CALL failed: STATUS: the runtime's last error" (rt may be 0: the thread's last error).
inline absl::Status ApiError(normuon_runtime_t rt, absl::string_view call,
                             normuon_status_t status) {
  const char* message = normuon_last_error(rt);
  return absl::InternalError(absl::StrCat(call, " failed: ", normuon_status_string(status), ": ",
                                          message != nullptr ? message : "(no message)"));
}

// Destroys a runtime when the scope ends, however it ends.
class RuntimeGuard {
 public:
  explicit RuntimeGuard(normuon_runtime_t rt) : rt_(rt) {}
  ~RuntimeGuard() {
    if (rt_ != 0) normuon_destroy(rt_);
  }
  RuntimeGuard(const RuntimeGuard&) = delete;
  RuntimeGuard& operator=(const RuntimeGuard&) = delete;

 private:
  normuon_runtime_t rt_;
};

// Registers a piece of one entry (normuon_param_desc_t's rows and, when piece.col_count > 0,
// col_begin / col_count; packed), held in param and grad (fp32), in the default group of its
// kind: normuon_register_matrix for a matrix, normuon_register_adamw for AdamW. On failure the
// message names the call and the entry (ApiError).
inline absl::Status RegisterPiece(normuon_runtime_t rt, const ModelShape& entry,
                                  const normuon::sharding::PieceRect& piece, void* param,
                                  const void* grad, normuon_param_t* handle) {
  normuon_param_desc_t desc;
  normuon_param_desc_init(&desc);
  desc.name = entry.name.c_str();
  desc.rows = entry.rows;
  desc.cols = entry.cols;
  desc.row_begin = piece.row_begin;
  desc.row_count = piece.row_count;
  desc.col_begin = piece.col_count > 0 ? piece.col_begin : 0;
  desc.col_count = piece.col_count;
  desc.param = param;
  desc.grad = grad;
  desc.param_dtype = desc.grad_dtype = NORMUON_DTYPE_FP32;
  const bool matrix = entry.kind == normuon::ParamKind::kMatrix;
  desc.group = matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
  const normuon_status_t st = matrix ? normuon_register_matrix(rt, &desc, handle)
                                     : normuon_register_adamw(rt, &desc, handle);
  if (st == NORMUON_SUCCESS) return absl::OkStatus();
  return ApiError(rt,
                  absl::StrCat(matrix ? "normuon_register_matrix" : "normuon_register_adamw",
                               " of '", entry.name, "'"),
                  st);
}

// Registers several pieces of one matrix entry (normuon_param_desc_t.pieces), each packed, back
// to back in param and grad (fp32) in list order, in the default matrix group.
inline absl::Status RegisterPieces(normuon_runtime_t rt, const ModelShape& entry,
                                   const std::vector<normuon::sharding::PieceRect>& pieces,
                                   float* param, float* grad, normuon_param_t* handle) {
  std::vector<normuon_piece_t> list;
  int64_t at = 0;
  for (const normuon::sharding::PieceRect& p : pieces) {
    list.push_back(normuon_piece_t{p.row_begin, p.row_count, p.col_begin, p.col_count, 0,
                                   param + at, grad + at});
    at += p.row_count * p.col_count;
  }
  normuon_param_desc_t desc;
  normuon_param_desc_init(&desc);
  desc.name = entry.name.c_str();
  desc.rows = entry.rows;
  desc.cols = entry.cols;
  desc.param_dtype = desc.grad_dtype = NORMUON_DTYPE_FP32;
  desc.group = NORMUON_GROUP_MATRIX_DEFAULT;
  desc.pieces = list.data();
  desc.num_pieces = static_cast<int32_t>(list.size());
  const normuon_status_t st = normuon_register_matrix(rt, &desc, handle);
  if (st == NORMUON_SUCCESS) return absl::OkStatus();
  return ApiError(rt, absl::StrCat("normuon_register_matrix of '", entry.name, "' (", list.size(),
                                   " pieces)"),
                  st);
}

// The same for whole rows `rows` of the entry (every column).
inline absl::Status RegisterEntry(normuon_runtime_t rt, const ModelShape& entry,
                                  const normuon::sharding::RowShard& rows, void* param,
                                  const void* grad, normuon_param_t* handle) {
  return RegisterPiece(rt, entry, {rows.row_begin, rows.row_count, 0, 0}, param, grad, handle);
}

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_COMMON_API_CALLS_H_
