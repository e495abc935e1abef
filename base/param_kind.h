// What the optimizer does with a parameter, and the size limit every layer checks: one
// definition for the runtime, sharding, the checkpoint format and the tools
// (docs/ARCHITECTURE.md section 4, "Layers").
#ifndef NORMUON_BASE_PARAM_KIND_H_
#define NORMUON_BASE_PARAM_KIND_H_

#include <cstdint>

namespace normuon {

// A matrix goes through Newton-Schulz (group 0's variant); an AdamW parameter does not. The
// values are part of the checkpoint format and of the registration agreement bytes: never
// renumber.
enum class ParamKind : uint32_t { kMatrix = 0, kAdamW = 1 };

inline const char* ParamKindName(ParamKind kind) {
  return kind == ParamKind::kMatrix ? "matrix" : "adamw";
}

// The largest element count (rows * cols) of one parameter that any layer accepts: the C API,
// the checkpoint reader and the shape-list parser refuse larger ones, so that every byte count
// derived from it fits an int64 with room to spare.
inline constexpr int64_t kMaxElements = int64_t{1} << 40;

}  // namespace normuon

#endif  // NORMUON_BASE_PARAM_KIND_H_
