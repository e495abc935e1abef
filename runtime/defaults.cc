// The defaults of the public structs: the *_init functions of normuon/normuon.h. They live in the
// runtime, which builds on them (the default groups, the profile), and the C edge exports them
// with the rest of the API (docs/ARCHITECTURE.md section 7, "Versioned structs").
#include <cstring>

#include "normuon/normuon.h"

extern "C" {

void normuon_config_init(normuon_config_t* c) {
  if (c == nullptr) return;
  std::memset(c, 0, sizeof(*c));
  c->struct_size = sizeof(*c);
  c->api_version = NORMUON_API_VERSION;
  c->backend = NORMUON_BACKEND_CPU;
  c->device = 0;
  c->variant = NORMUON_VARIANT_NORMUON;
  c->ns_dtype = NORMUON_NS_DEFAULT;
  c->ns_steps = 5;
  c->nesterov = 1;
  c->ns_eps = 0.0f;  // the orthogonalizer's own
  c->check_finite = 0;
  c->lr = 0.02f;
  c->momentum = 0.95f;
  c->beta2 = 0.95f;
  c->weight_decay = 0.0f;
  c->eps = 1e-10f;
  c->adamw_lr = 3e-4f;
  c->adamw_beta1 = 0.9f;
  c->adamw_beta2 = 0.95f;
  c->adamw_eps = 1e-10f;
  c->adamw_weight_decay = 0.0f;
  c->owner_policy = NORMUON_OWNER_ROUND_ROBIN;
  c->schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  c->bucket_bytes = uint64_t{32} << 20;
  c->lr_adjust = NORMUON_LR_ADJUST_DEFAULT;
  c->orthogonalizer = NORMUON_ORTHO_QUINTIC;
  c->ns_coefficients = nullptr;
  c->ns_norm_scale = 0.0f;
  c->cautious_weight_decay = 0;
  c->neuron_axis = NORMUON_NEURON_ROWS;
  c->cuda_graph = 0;
  c->ns_method = NORMUON_NS_METHOD_STANDARD;
  c->ns_restart_count = -1;  // the orthogonalizer's measured default (ResolveConfig)
}

void normuon_group_desc_init(normuon_group_desc_t* d, normuon_group_kind_t kind) {
  if (d == nullptr) return;
  std::memset(d, 0, sizeof(*d));
  d->struct_size = sizeof(*d);
  d->kind = kind;
  if (kind == NORMUON_GROUP_ADAMW) {
    d->lr = 3e-4f;
    d->beta1 = 0.9f;
    d->beta2 = 0.95f;
    d->eps = 1e-10f;
  } else {
    d->lr = 0.02f;
    d->beta1 = 0.95f;
    d->beta2 = 0.95f;
    d->eps = 1e-10f;
  }
}

void normuon_param_desc_init(normuon_param_desc_t* d) {
  if (d == nullptr) return;
  std::memset(d, 0, sizeof(*d));
  d->struct_size = sizeof(*d);
  d->param_dtype = NORMUON_DTYPE_FP32;
  d->grad_dtype = NORMUON_DTYPE_FP32;
  d->group = -1;  // the default group of the parameter's kind (resolved at registration)
}

void normuon_step_info_init(normuon_step_info_t* info) {
  if (info == nullptr) return;
  std::memset(info, 0, sizeof(*info));
  info->struct_size = sizeof(*info);
  info->nonfinite_param = -1;
  info->ns_fallback_param = -1;
}

void normuon_step_profile_init(normuon_step_profile_t* profile) {
  if (profile == nullptr) return;
  std::memset(profile, 0, sizeof(*profile));
  profile->struct_size = sizeof(*profile);
}

}  // extern "C"
