// plan_flags.h: the planner's own flag types (normuon_plan.cc): the machine kind, the link model
// and the list of schedules to report ("all" or one of api_flags.h's schedule names). The C API's
// enums (--ns_dtype, --owner_policy) use tools/common/api_flags.h.
#ifndef NORMUON_TOOLS_PLAN_PLAN_FLAGS_H_
#define NORMUON_TOOLS_PLAN_PLAN_FLAGS_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "normuon/normuon.h"
#include "tools/plan/transport_model.h"

namespace normuon::plan {

// --schedule: the schedules to plan, in report order.
struct ScheduleList {
  std::vector<normuon_schedule_t> schedules;
};
ScheduleList AllSchedules();  // "all": every schedule of tools/common/api_flags.h, in its order

bool AbslParseFlag(absl::string_view text, MachineKind* out, std::string* error);
std::string AbslUnparseFlag(MachineKind value);
bool AbslParseFlag(absl::string_view text, LinkModel* out, std::string* error);
std::string AbslUnparseFlag(LinkModel value);
bool AbslParseFlag(absl::string_view text, ScheduleList* out, std::string* error);
std::string AbslUnparseFlag(const ScheduleList& value);

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_PLAN_FLAGS_H_
