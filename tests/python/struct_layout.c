/* Prints the C layout of every public struct of normuon.h and comm.h, and the values of their
 * enums, for tests/python/capi_test.py to compare with the ctypes mirrors in
 * python/normuon/_capi.py. Output lines:
 *   struct <name> <sizeof>
 *   field <struct>.<field> <offsetof> <sizeof>
 *   enum <NAME> <value>
 */
#include <stddef.h>
#include <stdio.h>

#include "normuon/comm.h"

#define STRUCT(T) printf("struct %s %zu\n", #T, sizeof(T))
#define FIELD(T, f) \
  printf("field %s.%s %zu %zu\n", #T, #f, offsetof(T, f), sizeof(((T*)0)->f))
#define ENUM(e) printf("enum %s %d\n", #e, (int)(e))

int main(void) {
  STRUCT(normuon_config_t);
  FIELD(normuon_config_t, struct_size);
  FIELD(normuon_config_t, api_version);
  FIELD(normuon_config_t, backend);
  FIELD(normuon_config_t, device);
  FIELD(normuon_config_t, variant);
  FIELD(normuon_config_t, ns_dtype);
  FIELD(normuon_config_t, ns_steps);
  FIELD(normuon_config_t, nesterov);
  FIELD(normuon_config_t, ns_eps);
  FIELD(normuon_config_t, check_finite);
  FIELD(normuon_config_t, lr);
  FIELD(normuon_config_t, momentum);
  FIELD(normuon_config_t, beta2);
  FIELD(normuon_config_t, weight_decay);
  FIELD(normuon_config_t, eps);
  FIELD(normuon_config_t, adamw_lr);
  FIELD(normuon_config_t, adamw_beta1);
  FIELD(normuon_config_t, adamw_beta2);
  FIELD(normuon_config_t, adamw_eps);
  FIELD(normuon_config_t, adamw_weight_decay);
  FIELD(normuon_config_t, owner_policy);
  FIELD(normuon_config_t, schedule);
  FIELD(normuon_config_t, bucket_bytes);
  FIELD(normuon_config_t, lr_adjust);
  FIELD(normuon_config_t, orthogonalizer);
  FIELD(normuon_config_t, ns_coefficients);
  FIELD(normuon_config_t, ns_norm_scale);
  FIELD(normuon_config_t, cautious_weight_decay);
  FIELD(normuon_config_t, neuron_axis);
  FIELD(normuon_config_t, cuda_graph);
  FIELD(normuon_config_t, ns_method);
  FIELD(normuon_config_t, ns_restart_count);
  FIELD(normuon_config_t, ns_restarts);
  FIELD(normuon_config_t, ns_symmetric_products);

  STRUCT(normuon_group_desc_t);
  FIELD(normuon_group_desc_t, struct_size);
  FIELD(normuon_group_desc_t, kind);
  FIELD(normuon_group_desc_t, lr);
  FIELD(normuon_group_desc_t, weight_decay);
  FIELD(normuon_group_desc_t, beta1);
  FIELD(normuon_group_desc_t, beta2);
  FIELD(normuon_group_desc_t, eps);

  STRUCT(normuon_param_desc_t);
  FIELD(normuon_param_desc_t, struct_size);
  FIELD(normuon_param_desc_t, name);
  FIELD(normuon_param_desc_t, rows);
  FIELD(normuon_param_desc_t, cols);
  FIELD(normuon_param_desc_t, row_begin);
  FIELD(normuon_param_desc_t, row_count);
  FIELD(normuon_param_desc_t, param);
  FIELD(normuon_param_desc_t, param_dtype);
  FIELD(normuon_param_desc_t, grad);
  FIELD(normuon_param_desc_t, grad_dtype);
  FIELD(normuon_param_desc_t, group);
  FIELD(normuon_param_desc_t, row_splits);
  FIELD(normuon_param_desc_t, num_row_splits);
  FIELD(normuon_param_desc_t, num_heads);
  FIELD(normuon_param_desc_t, col_begin);
  FIELD(normuon_param_desc_t, col_count);
  FIELD(normuon_param_desc_t, ld);
  FIELD(normuon_param_desc_t, pieces);
  FIELD(normuon_param_desc_t, num_pieces);

  STRUCT(normuon_piece_t);
  FIELD(normuon_piece_t, row_begin);
  FIELD(normuon_piece_t, row_count);
  FIELD(normuon_piece_t, col_begin);
  FIELD(normuon_piece_t, col_count);
  FIELD(normuon_piece_t, ld);
  FIELD(normuon_piece_t, param);
  FIELD(normuon_piece_t, grad);

  STRUCT(normuon_step_info_t);
  FIELD(normuon_step_info_t, struct_size);
  FIELD(normuon_step_info_t, steps_taken);
  FIELD(normuon_step_info_t, steps_skipped);
  FIELD(normuon_step_info_t, last_skipped);
  FIELD(normuon_step_info_t, nonfinite_param);
  FIELD(normuon_step_info_t, ns_fallbacks);
  FIELD(normuon_step_info_t, ns_fallback_param);
  FIELD(normuon_step_info_t, ns_fallback_reason);

  STRUCT(normuon_step_profile_t);
  FIELD(normuon_step_profile_t, struct_size);
  FIELD(normuon_step_profile_t, total_ms);
  FIELD(normuon_step_profile_t, finite_check_ms);
  FIELD(normuon_step_profile_t, momentum_ms);
  FIELD(normuon_step_profile_t, gather_ms);
  FIELD(normuon_step_profile_t, newton_schulz_ms);
  FIELD(normuon_step_profile_t, scatter_ms);
  FIELD(normuon_step_profile_t, row_stats_ms);
  FIELD(normuon_step_profile_t, update_ms);
  FIELD(normuon_step_profile_t, adamw_ms);
  FIELD(normuon_step_profile_t, exposed_comm_ms);
  FIELD(normuon_step_profile_t, bytes_sent);
  FIELD(normuon_step_profile_t, bytes_received);
  FIELD(normuon_step_profile_t, buckets);

  STRUCT(normuon_p2p_t);
  FIELD(normuon_p2p_t, peer);
  FIELD(normuon_p2p_t, buf);
  FIELD(normuon_p2p_t, bytes);

  STRUCT(normuon_comm_ops_t);
  FIELD(normuon_comm_ops_t, struct_size);
  FIELD(normuon_comm_ops_t, ctx);
  FIELD(normuon_comm_ops_t, rank);
  FIELD(normuon_comm_ops_t, world_size);
  FIELD(normuon_comm_ops_t, exchange);
  FIELD(normuon_comm_ops_t, all_reduce_sum_f32);
  FIELD(normuon_comm_ops_t, all_gather);
  FIELD(normuon_comm_ops_t, abort);
  FIELD(normuon_comm_ops_t, destroy);
  FIELD(normuon_comm_ops_t, last_error);
  FIELD(normuon_comm_ops_t, device_memory);

  /* Scalar typedefs the bindings declare as fixed-width integers. */
  printf("typedef normuon_runtime_t %zu\n", sizeof(normuon_runtime_t));
  printf("typedef normuon_comm_t %zu\n", sizeof(normuon_comm_t));
  printf("typedef normuon_param_t %zu\n", sizeof(normuon_param_t));
  printf("typedef normuon_group_t %zu\n", sizeof(normuon_group_t));
  printf("typedef normuon_status_t %zu\n", sizeof(normuon_status_t));

  ENUM(NORMUON_API_VERSION);
  ENUM(NORMUON_VERSION_MAJOR);
  ENUM(NORMUON_GROUP_MATRIX_DEFAULT);
  ENUM(NORMUON_GROUP_ADAMW_DEFAULT);
  ENUM(NORMUON_SUCCESS);
  ENUM(NORMUON_ERROR_INVALID_ARGUMENT);
  ENUM(NORMUON_ERROR_INVALID_HANDLE);
  ENUM(NORMUON_ERROR_INVALID_STATE);
  ENUM(NORMUON_ERROR_UNSUPPORTED);
  ENUM(NORMUON_ERROR_OUT_OF_MEMORY);
  ENUM(NORMUON_ERROR_CUDA);
  ENUM(NORMUON_ERROR_COMM);
  ENUM(NORMUON_ERROR_NONFINITE);
  ENUM(NORMUON_ERROR_TIMEOUT);
  ENUM(NORMUON_ERROR_INTERNAL);
  ENUM(NORMUON_BACKEND_CPU);
  ENUM(NORMUON_BACKEND_CUDA);
  ENUM(NORMUON_DTYPE_FP32);
  ENUM(NORMUON_DTYPE_BF16);
  ENUM(NORMUON_NS_DEFAULT);
  ENUM(NORMUON_NS_FP32);
  ENUM(NORMUON_NS_BF16);
  ENUM(NORMUON_NS_FP16);
  ENUM(NORMUON_NS_METHOD_STANDARD);
  ENUM(NORMUON_NS_METHOD_GRAM);
  ENUM(NORMUON_MAX_NS_RESTARTS);
  ENUM(NORMUON_OWNER_ROUND_ROBIN);
  ENUM(NORMUON_OWNER_COST_BALANCED);
  ENUM(NORMUON_SCHEDULE_SEQUENTIAL);
  ENUM(NORMUON_SCHEDULE_PER_MATRIX);
  ENUM(NORMUON_SCHEDULE_BUCKETED);
  ENUM(NORMUON_VARIANT_NORMUON);
  ENUM(NORMUON_VARIANT_NORMUON_PAPER);
  ENUM(NORMUON_VARIANT_MUON);
  ENUM(NORMUON_VARIANT_ADAMUON);
  ENUM(NORMUON_LR_ADJUST_DEFAULT);
  ENUM(NORMUON_LR_ADJUST_NONE);
  ENUM(NORMUON_LR_ADJUST_SPECTRAL);
  ENUM(NORMUON_LR_ADJUST_RMS);
  ENUM(NORMUON_STATUS_MIN_ENUM);
  ENUM(NORMUON_BACKEND_MIN_ENUM);
  ENUM(NORMUON_DTYPE_MIN_ENUM);
  ENUM(NORMUON_NS_DTYPE_MIN_ENUM);
  ENUM(NORMUON_NS_METHOD_MIN_ENUM);
  ENUM(NORMUON_OWNER_POLICY_MIN_ENUM);
  ENUM(NORMUON_SCHEDULE_MIN_ENUM);
  ENUM(NORMUON_VARIANT_MIN_ENUM);
  ENUM(NORMUON_NEURON_AXIS_MIN_ENUM);
  ENUM(NORMUON_LR_ADJUST_MIN_ENUM);
  ENUM(NORMUON_ORTHOGONALIZER_MIN_ENUM);
  ENUM(NORMUON_GROUP_KIND_MIN_ENUM);
  ENUM(NORMUON_STATE_KIND_MIN_ENUM);
  ENUM(NORMUON_FAULT_MIN_ENUM);
  ENUM(NORMUON_COMM_MEMORY_MIN_ENUM);
  ENUM(NORMUON_STATUS_MAX_ENUM);
  ENUM(NORMUON_BACKEND_MAX_ENUM);
  ENUM(NORMUON_DTYPE_MAX_ENUM);
  ENUM(NORMUON_NS_DTYPE_MAX_ENUM);
  ENUM(NORMUON_NS_METHOD_MAX_ENUM);
  ENUM(NORMUON_OWNER_POLICY_MAX_ENUM);
  ENUM(NORMUON_SCHEDULE_MAX_ENUM);
  ENUM(NORMUON_VARIANT_MAX_ENUM);
  ENUM(NORMUON_NEURON_AXIS_MAX_ENUM);
  ENUM(NORMUON_LR_ADJUST_MAX_ENUM);
  ENUM(NORMUON_ORTHOGONALIZER_MAX_ENUM);
  ENUM(NORMUON_GROUP_KIND_MAX_ENUM);
  ENUM(NORMUON_STATE_KIND_MAX_ENUM);
  ENUM(NORMUON_FAULT_MAX_ENUM);
  ENUM(NORMUON_COMM_MEMORY_MAX_ENUM);
  ENUM(NORMUON_NEURON_ROWS);
  ENUM(NORMUON_NEURON_COLUMNS);
  ENUM(NORMUON_ORTHO_QUINTIC);
  ENUM(NORMUON_ORTHO_POLAR_EXPRESS);
  ENUM(NORMUON_ORTHO_CUSTOM);
  ENUM(NORMUON_GROUP_NORMUON);
  ENUM(NORMUON_GROUP_ADAMW);
  ENUM(NORMUON_STATE_MOMENTUM);
  ENUM(NORMUON_STATE_SECOND_MOMENT);
  ENUM(NORMUON_STATE_EXP_AVG);
  ENUM(NORMUON_STATE_EXP_AVG_SQ);
  ENUM(NORMUON_STATE_STEP);
  ENUM(NORMUON_FAULT_NONE);
  ENUM(NORMUON_FAULT_ERROR);
  ENUM(NORMUON_FAULT_NEVER_ARRIVE);
  ENUM(NORMUON_FAULT_WRONG_SIZE);
  ENUM(NORMUON_COMM_MEMORY_HOST);
  ENUM(NORMUON_COMM_MEMORY_DEVICE);
  ENUM(NORMUON_NCCL_UNIQUE_ID_BYTES);
  return 0;
}
