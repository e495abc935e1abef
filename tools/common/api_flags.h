// api_flags.h: the C API's configuration enums as the tools' flag types. Each has one name
// function (the spelling of normuon_config_t's choices on every command line and in every
// report) and AbslParseFlag / AbslUnparseFlag, so `ABSL_FLAG(normuon_schedule_t, schedule, ...)`
// refuses a bad value in Abseil's parser, naming the flag and the accepted values:
//   --backend       cpu, cuda                               (normuon_backend_t)
//   --ns_dtype      default, fp32, bf16, fp16               (normuon_ns_dtype_t)
//   --ns_method     standard, gram                          (normuon_ns_method_t)
//   --owner_policy  round_robin, cost_balanced              (normuon_owner_policy_t)
//   --schedule      sequential, per_matrix, bucketed        (normuon_schedule_t)
// The flag functions are in the global namespace, the enums' own, where Abseil finds them.
#ifndef NORMUON_TOOLS_COMMON_API_FLAGS_H_
#define NORMUON_TOOLS_COMMON_API_FLAGS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "normuon/normuon.h"
#include "sharding/owner_assignment.h"

namespace normuon_tools {

// Every value of each enum that a flag accepts, in the order the messages list them.
inline constexpr normuon_backend_t kBackends[] = {NORMUON_BACKEND_CPU, NORMUON_BACKEND_CUDA};
inline constexpr normuon_ns_dtype_t kNsDtypes[] = {NORMUON_NS_DEFAULT, NORMUON_NS_FP32,
                                                   NORMUON_NS_BF16, NORMUON_NS_FP16};
inline constexpr normuon_ns_method_t kNsMethods[] = {NORMUON_NS_METHOD_STANDARD,
                                                     NORMUON_NS_METHOD_GRAM};
inline constexpr normuon_owner_policy_t kOwnerPolicies[] = {NORMUON_OWNER_ROUND_ROBIN,
                                                            NORMUON_OWNER_COST_BALANCED};
inline constexpr normuon_schedule_t kSchedules[] = {
    NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED};

// The names above ("unknown" for any other value).
absl::string_view BackendName(normuon_backend_t backend);
absl::string_view NsDtypeName(normuon_ns_dtype_t ns_dtype);
absl::string_view NsMethodName(normuon_ns_method_t method);
absl::string_view OwnerPolicyName(normuon_owner_policy_t policy);  // sharding::OwnerPolicyName's
absl::string_view ScheduleName(normuon_schedule_t schedule);

// The Newton-Schulz precision a run actually uses: ns_dtype, or for NORMUON_NS_DEFAULT the
// backend's own (fp32 on CPU, bf16 on CUDA). NORMUON_NS_FP32, NORMUON_NS_BF16 or NORMUON_NS_FP16.
normuon_ns_dtype_t EffectiveNsDtype(normuon_backend_t backend, normuon_ns_dtype_t ns_dtype);

// The sharding library's policy of the C API's (the planner plans with sharding/ directly).
normuon::sharding::OwnerPolicy ShardingOwnerPolicy(normuon_owner_policy_t policy);

}  // namespace normuon_tools

bool AbslParseFlag(absl::string_view text, normuon_backend_t* out, std::string* error);
bool AbslParseFlag(absl::string_view text, normuon_ns_dtype_t* out, std::string* error);
bool AbslParseFlag(absl::string_view text, normuon_ns_method_t* out, std::string* error);
bool AbslParseFlag(absl::string_view text, normuon_owner_policy_t* out, std::string* error);
bool AbslParseFlag(absl::string_view text, normuon_schedule_t* out, std::string* error);
std::string AbslUnparseFlag(normuon_backend_t value);
std::string AbslUnparseFlag(normuon_ns_dtype_t value);
std::string AbslUnparseFlag(normuon_ns_method_t value);
std::string AbslUnparseFlag(normuon_owner_policy_t value);
std::string AbslUnparseFlag(normuon_schedule_t value);

#endif  // NORMUON_TOOLS_COMMON_API_FLAGS_H_
