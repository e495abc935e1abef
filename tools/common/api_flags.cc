// The C API enums' names and flag functions declared in api_flags.h.
#include "tools/common/api_flags.h"

#include "tools/common/enum_flags.h"

namespace normuon_tools {

absl::string_view BackendName(normuon_backend_t backend) {
  switch (backend) {
    case NORMUON_BACKEND_CPU: return "cpu";
    case NORMUON_BACKEND_CUDA: return "cuda";
    default: return "unknown";
  }
}

absl::string_view NsDtypeName(normuon_ns_dtype_t ns_dtype) {
  switch (ns_dtype) {
    case NORMUON_NS_DEFAULT: return "default";
    case NORMUON_NS_FP32: return "fp32";
    case NORMUON_NS_BF16: return "bf16";
    case NORMUON_NS_FP16: return "fp16";
    default: return "unknown";
  }
}

absl::string_view NsMethodName(normuon_ns_method_t method) {
  switch (method) {
    case NORMUON_NS_METHOD_STANDARD: return "standard";
    case NORMUON_NS_METHOD_GRAM: return "gram";
    default: return "unknown";
  }
}

normuon_ns_dtype_t EffectiveNsDtype(normuon_backend_t backend, normuon_ns_dtype_t ns_dtype) {
  if (ns_dtype == NORMUON_NS_FP32 || ns_dtype == NORMUON_NS_BF16 || ns_dtype == NORMUON_NS_FP16) {
    return ns_dtype;
  }
  return backend == NORMUON_BACKEND_CUDA ? NORMUON_NS_BF16 : NORMUON_NS_FP32;
}

normuon::sharding::OwnerPolicy ShardingOwnerPolicy(normuon_owner_policy_t policy) {
  return policy == NORMUON_OWNER_COST_BALANCED ? normuon::sharding::OwnerPolicy::kCostBalanced
                                               : normuon::sharding::OwnerPolicy::kRoundRobin;
}

absl::string_view OwnerPolicyName(normuon_owner_policy_t policy) {
  if (policy != NORMUON_OWNER_ROUND_ROBIN && policy != NORMUON_OWNER_COST_BALANCED) {
    return "unknown";
  }
  return normuon::sharding::OwnerPolicyName(ShardingOwnerPolicy(policy));
}

absl::string_view ScheduleName(normuon_schedule_t schedule) {
  switch (schedule) {
    case NORMUON_SCHEDULE_SEQUENTIAL: return "sequential";
    case NORMUON_SCHEDULE_PER_MATRIX: return "per_matrix";
    case NORMUON_SCHEDULE_BUCKETED: return "bucketed";
    default: return "unknown";
  }
}

}  // namespace normuon_tools

bool AbslParseFlag(absl::string_view text, normuon_backend_t* out, std::string* error) {
  return normuon_tools::ParseEnumFlag(text, "backend", normuon_tools::kBackends,
                                      normuon_tools::BackendName, out, error);
}

bool AbslParseFlag(absl::string_view text, normuon_ns_dtype_t* out, std::string* error) {
  return normuon_tools::ParseEnumFlag(text, "ns_dtype", normuon_tools::kNsDtypes,
                                      normuon_tools::NsDtypeName, out, error);
}

bool AbslParseFlag(absl::string_view text, normuon_ns_method_t* out, std::string* error) {
  return normuon_tools::ParseEnumFlag(text, "ns_method", normuon_tools::kNsMethods,
                                      normuon_tools::NsMethodName, out, error);
}

bool AbslParseFlag(absl::string_view text, normuon_owner_policy_t* out, std::string* error) {
  return normuon_tools::ParseEnumFlag(text, "owner_policy", normuon_tools::kOwnerPolicies,
                                      normuon_tools::OwnerPolicyName, out, error);
}

bool AbslParseFlag(absl::string_view text, normuon_schedule_t* out, std::string* error) {
  return normuon_tools::ParseEnumFlag(text, "schedule", normuon_tools::kSchedules,
                                      normuon_tools::ScheduleName, out, error);
}

std::string AbslUnparseFlag(normuon_backend_t value) {
  return std::string(normuon_tools::BackendName(value));
}

std::string AbslUnparseFlag(normuon_ns_dtype_t value) {
  return std::string(normuon_tools::NsDtypeName(value));
}

std::string AbslUnparseFlag(normuon_ns_method_t value) {
  return std::string(normuon_tools::NsMethodName(value));
}

std::string AbslUnparseFlag(normuon_owner_policy_t value) {
  return std::string(normuon_tools::OwnerPolicyName(value));
}

std::string AbslUnparseFlag(normuon_schedule_t value) {
  return std::string(normuon_tools::ScheduleName(value));
}
