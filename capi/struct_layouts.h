// The field tables of every versioned struct of the public headers, for the one versioned copy
// at the C edge (base/versioned_struct.h). Each table lists every field (StructLayoutDescribes
// checks it against the header at compile time: a field added without its table entry fails the
// build) and where the struct's first version ended. Later fields were appended after it; by
// rule, 0 in a field added later means "as before the field existed", so an older caller's
// struct gets the *_init defaults for them and a newer caller's zero fields are harmless.
#ifndef NORMUON_CAPI_STRUCT_LAYOUTS_H_
#define NORMUON_CAPI_STRUCT_LAYOUTS_H_

#include <cstddef>
#include <iterator>

#include "base/versioned_struct.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"

namespace normuon {

#define NORMUON_F_(T, f) NORMUON_STRUCT_FIELD(T, f)

// normuon_config_t. First version: through adamw_weight_decay (80 bytes); owner_policy, schedule
// and bucket_bytes, then lr_adjust to cautious_weight_decay, neuron_axis, cuda_graph, and
// ns_method to ns_restarts, then ns_symmetric_products came later.
inline constexpr StructField kConfigFields[] = {
    NORMUON_F_(normuon_config_t, struct_size),
    NORMUON_F_(normuon_config_t, api_version),
    NORMUON_F_(normuon_config_t, backend),
    NORMUON_F_(normuon_config_t, device),
    NORMUON_F_(normuon_config_t, variant),
    NORMUON_F_(normuon_config_t, ns_dtype),
    NORMUON_F_(normuon_config_t, ns_steps),
    NORMUON_F_(normuon_config_t, nesterov),
    NORMUON_F_(normuon_config_t, ns_eps),
    NORMUON_F_(normuon_config_t, check_finite),
    NORMUON_F_(normuon_config_t, lr),
    NORMUON_F_(normuon_config_t, momentum),
    NORMUON_F_(normuon_config_t, beta2),
    NORMUON_F_(normuon_config_t, weight_decay),
    NORMUON_F_(normuon_config_t, eps),
    NORMUON_F_(normuon_config_t, adamw_lr),
    NORMUON_F_(normuon_config_t, adamw_beta1),
    NORMUON_F_(normuon_config_t, adamw_beta2),
    NORMUON_F_(normuon_config_t, adamw_eps),
    NORMUON_F_(normuon_config_t, adamw_weight_decay),
    NORMUON_F_(normuon_config_t, owner_policy),
    NORMUON_F_(normuon_config_t, schedule),
    NORMUON_F_(normuon_config_t, bucket_bytes),
    NORMUON_F_(normuon_config_t, lr_adjust),
    NORMUON_F_(normuon_config_t, orthogonalizer),
    NORMUON_F_(normuon_config_t, ns_coefficients),
    NORMUON_F_(normuon_config_t, ns_norm_scale),
    NORMUON_F_(normuon_config_t, cautious_weight_decay),
    NORMUON_F_(normuon_config_t, neuron_axis),
    NORMUON_F_(normuon_config_t, cuda_graph),
    NORMUON_F_(normuon_config_t, ns_method),
    NORMUON_F_(normuon_config_t, ns_restart_count),
    NORMUON_F_(normuon_config_t, ns_restarts),
    NORMUON_F_(normuon_config_t, ns_symmetric_products),
};
inline constexpr StructLayout kConfigLayout = {
    "config", "normuon_config_t", "normuon_config_init",
    sizeof(normuon_config_t), alignof(normuon_config_t),
    NORMUON_STRUCT_END_OF(normuon_config_t, adamw_weight_decay),
    kConfigFields, std::size(kConfigFields)};
static_assert(StructLayoutDescribes<normuon_config_t>(kConfigLayout),
              "kConfigFields does not match normuon.h");

// normuon_group_desc_t: one version.
inline constexpr StructField kGroupDescFields[] = {
    NORMUON_F_(normuon_group_desc_t, struct_size),
    NORMUON_F_(normuon_group_desc_t, kind),
    NORMUON_F_(normuon_group_desc_t, lr),
    NORMUON_F_(normuon_group_desc_t, weight_decay),
    NORMUON_F_(normuon_group_desc_t, beta1),
    NORMUON_F_(normuon_group_desc_t, beta2),
    NORMUON_F_(normuon_group_desc_t, eps),
};
inline constexpr StructLayout kGroupDescLayout = {
    "desc", "normuon_group_desc_t", "normuon_group_desc_init",
    sizeof(normuon_group_desc_t), alignof(normuon_group_desc_t),
    NORMUON_STRUCT_END_OF(normuon_group_desc_t, eps),
    kGroupDescFields, std::size(kGroupDescFields)};
static_assert(StructLayoutDescribes<normuon_group_desc_t>(kGroupDescLayout),
              "kGroupDescFields does not match normuon.h");

// normuon_param_desc_t. First version: through group (80 bytes); row_splits and
// num_row_splits, then num_heads, col_begin, col_count and ld came later.
inline constexpr StructField kParamDescFields[] = {
    NORMUON_F_(normuon_param_desc_t, struct_size),
    NORMUON_F_(normuon_param_desc_t, name),
    NORMUON_F_(normuon_param_desc_t, rows),
    NORMUON_F_(normuon_param_desc_t, cols),
    NORMUON_F_(normuon_param_desc_t, row_begin),
    NORMUON_F_(normuon_param_desc_t, row_count),
    NORMUON_F_(normuon_param_desc_t, param),
    NORMUON_F_(normuon_param_desc_t, param_dtype),
    NORMUON_F_(normuon_param_desc_t, grad),
    NORMUON_F_(normuon_param_desc_t, grad_dtype),
    NORMUON_F_(normuon_param_desc_t, group),
    NORMUON_F_(normuon_param_desc_t, row_splits),
    NORMUON_F_(normuon_param_desc_t, num_row_splits),
    NORMUON_F_(normuon_param_desc_t, num_heads),
    NORMUON_F_(normuon_param_desc_t, col_begin),
    NORMUON_F_(normuon_param_desc_t, col_count),
    NORMUON_F_(normuon_param_desc_t, ld),
    NORMUON_F_(normuon_param_desc_t, pieces),
    NORMUON_F_(normuon_param_desc_t, num_pieces),
};
inline constexpr StructLayout kParamDescLayout = {
    "desc", "normuon_param_desc_t", "normuon_param_desc_init",
    sizeof(normuon_param_desc_t), alignof(normuon_param_desc_t),
    NORMUON_STRUCT_END_OF(normuon_param_desc_t, group),
    kParamDescFields, std::size(kParamDescFields)};
static_assert(StructLayoutDescribes<normuon_param_desc_t>(kParamDescLayout),
              "kParamDescFields does not match normuon.h");

// normuon_step_info_t (output). First version: through nonfinite_param; the ns_fallback fields
// came with Gram Newton-Schulz.
inline constexpr StructField kStepInfoFields[] = {
    NORMUON_F_(normuon_step_info_t, struct_size),
    NORMUON_F_(normuon_step_info_t, steps_taken),
    NORMUON_F_(normuon_step_info_t, steps_skipped),
    NORMUON_F_(normuon_step_info_t, last_skipped),
    NORMUON_F_(normuon_step_info_t, nonfinite_param),
    NORMUON_F_(normuon_step_info_t, ns_fallbacks),
    NORMUON_F_(normuon_step_info_t, ns_fallback_param),
    NORMUON_F_(normuon_step_info_t, ns_fallback_reason),
};
inline constexpr StructLayout kStepInfoLayout = {
    "info", "normuon_step_info_t", "normuon_step_info_init",
    sizeof(normuon_step_info_t), alignof(normuon_step_info_t),
    NORMUON_STRUCT_END_OF(normuon_step_info_t, nonfinite_param),
    kStepInfoFields, std::size(kStepInfoFields)};
static_assert(StructLayoutDescribes<normuon_step_info_t>(kStepInfoLayout),
              "kStepInfoFields does not match normuon.h");

// normuon_step_profile_t (output). First version: through adamw_ms (80 bytes);
// exposed_comm_ms, bytes_sent, bytes_received and buckets came with the schedules.
inline constexpr StructField kStepProfileFields[] = {
    NORMUON_F_(normuon_step_profile_t, struct_size),
    NORMUON_F_(normuon_step_profile_t, total_ms),
    NORMUON_F_(normuon_step_profile_t, finite_check_ms),
    NORMUON_F_(normuon_step_profile_t, momentum_ms),
    NORMUON_F_(normuon_step_profile_t, gather_ms),
    NORMUON_F_(normuon_step_profile_t, newton_schulz_ms),
    NORMUON_F_(normuon_step_profile_t, scatter_ms),
    NORMUON_F_(normuon_step_profile_t, row_stats_ms),
    NORMUON_F_(normuon_step_profile_t, update_ms),
    NORMUON_F_(normuon_step_profile_t, adamw_ms),
    NORMUON_F_(normuon_step_profile_t, exposed_comm_ms),
    NORMUON_F_(normuon_step_profile_t, bytes_sent),
    NORMUON_F_(normuon_step_profile_t, bytes_received),
    NORMUON_F_(normuon_step_profile_t, buckets),
};
inline constexpr StructLayout kStepProfileLayout = {
    "profile", "normuon_step_profile_t", "normuon_step_profile_init",
    sizeof(normuon_step_profile_t), alignof(normuon_step_profile_t),
    NORMUON_STRUCT_END_OF(normuon_step_profile_t, adamw_ms),
    kStepProfileFields, std::size(kStepProfileFields)};
static_assert(StructLayoutDescribes<normuon_step_profile_t>(kStepProfileLayout),
              "kStepProfileFields does not match normuon.h");

// normuon_comm_ops_t. First version: through last_error; device_memory came with the CUDA
// backend's sharded step.
inline constexpr StructField kCommOpsFields[] = {
    NORMUON_F_(normuon_comm_ops_t, struct_size),
    NORMUON_F_(normuon_comm_ops_t, ctx),
    NORMUON_F_(normuon_comm_ops_t, rank),
    NORMUON_F_(normuon_comm_ops_t, world_size),
    NORMUON_F_(normuon_comm_ops_t, exchange),
    NORMUON_F_(normuon_comm_ops_t, all_reduce_sum_f32),
    NORMUON_F_(normuon_comm_ops_t, all_gather),
    NORMUON_F_(normuon_comm_ops_t, abort),
    NORMUON_F_(normuon_comm_ops_t, destroy),
    NORMUON_F_(normuon_comm_ops_t, last_error),
    NORMUON_F_(normuon_comm_ops_t, device_memory),
};
inline constexpr StructLayout kCommOpsLayout = {
    "ops", "normuon_comm_ops_t", "normuon_comm_ops_init",
    sizeof(normuon_comm_ops_t), alignof(normuon_comm_ops_t),
    NORMUON_STRUCT_END_OF(normuon_comm_ops_t, last_error),
    kCommOpsFields, std::size(kCommOpsFields)};
static_assert(StructLayoutDescribes<normuon_comm_ops_t>(kCommOpsLayout),
              "kCommOpsFields does not match comm.h");

#undef NORMUON_F_

}  // namespace normuon

#endif  // NORMUON_CAPI_STRUCT_LAYOUTS_H_
