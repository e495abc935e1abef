// register_entry.h: registering one entry of a model's shape list through the C API, as
// normuon_run and the step benchmark do. Header-only, so that //tools:tool_common does not link
// the library: the binaries that register parameters link //capi themselves.
#ifndef NORMUON_TOOLS_COMMON_REGISTER_ENTRY_H_
#define NORMUON_TOOLS_COMMON_REGISTER_ENTRY_H_

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "normuon/normuon.h"
#include "sharding/shard.h"
#include "tools/model_shapes.h"

namespace normuon_tools {

// Registers the rows `rows` of one entry, held in param and grad (fp32), in the default group of
// its kind: normuon_register_matrix for a matrix, normuon_register_adamw for AdamW. On failure
// the message names the call, the entry and the runtime's last error.
inline absl::Status RegisterEntry(normuon_runtime_t rt, const ModelShape& entry,
                                  const normuon::sharding::RowShard& rows, void* param,
                                  const void* grad, normuon_param_t* handle) {
  normuon_param_desc_t desc;
  normuon_param_desc_init(&desc);
  desc.name = entry.name.c_str();
  desc.rows = entry.rows;
  desc.cols = entry.cols;
  desc.row_begin = rows.row_begin;
  desc.row_count = rows.row_count;
  desc.param = param;
  desc.grad = grad;
  desc.param_dtype = desc.grad_dtype = NORMUON_DTYPE_FP32;
  const bool matrix = entry.kind == normuon::ParamKind::kMatrix;
  desc.group = matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
  const normuon_status_t st = matrix ? normuon_register_matrix(rt, &desc, handle)
                                     : normuon_register_adamw(rt, &desc, handle);
  if (st == NORMUON_SUCCESS) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(matrix ? "normuon_register_matrix" : "normuon_register_adamw", " of '",
                   entry.name, "': ", normuon_status_string(st), ": ", normuon_last_error(rt)));
}

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_COMMON_REGISTER_ENTRY_H_
