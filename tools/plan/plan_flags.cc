// The planner's flag types (plan_flags.h).
#include "tools/plan/plan_flags.h"

#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/common/api_flags.h"
#include "tools/common/enum_flags.h"

namespace normuon::plan {
namespace {

constexpr MachineKind kMachineKinds[] = {MachineKind::kCluster, MachineKind::kCpuInprocess};
constexpr LinkModel kLinkModels[] = {LinkModel::kPort, LinkModel::kPeer};

}  // namespace

ScheduleList AllSchedules() {
  return ScheduleList{{std::begin(normuon_tools::kSchedules), std::end(normuon_tools::kSchedules)}};
}

bool AbslParseFlag(absl::string_view text, MachineKind* out, std::string* error) {
  return normuon_tools::ParseEnumFlag(text, "machine", kMachineKinds, MachineKindName, out,
                                      error);
}

std::string AbslUnparseFlag(MachineKind value) { return MachineKindName(value); }

bool AbslParseFlag(absl::string_view text, LinkModel* out, std::string* error) {
  return normuon_tools::ParseEnumFlag(text, "link_model", kLinkModels, LinkModelName, out, error);
}

std::string AbslUnparseFlag(LinkModel value) { return LinkModelName(value); }

bool AbslParseFlag(absl::string_view text, ScheduleList* out, std::string* error) {
  if (text == "all") {
    *out = AllSchedules();
    return true;
  }
  normuon_schedule_t one;
  if (!AbslParseFlag(text, &one, error)) {
    *error = absl::StrCat(*error, " (or all)");
    return false;
  }
  out->schedules = {one};
  return true;
}

std::string AbslUnparseFlag(const ScheduleList& value) {
  if (value.schedules == AllSchedules().schedules) return "all";
  return absl::StrJoin(value.schedules, ",", [](std::string* out, normuon_schedule_t s) {
    absl::StrAppend(out, normuon_tools::ScheduleName(s));
  });
}

}  // namespace normuon::plan
