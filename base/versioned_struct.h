// The one copy that every versioned public struct goes through at the C edge (every struct of
// include/normuon/*.h with a struct_size field; docs/ARCHITECTURE.md section 7, "C API
// conventions"). A caller sets struct_size to sizeof the struct as its header declared it, which
// may be an older or a newer version than this library's:
//
//   struct_size < 4, or smaller than the first version        refused: InvalidArgument
//   larger than kMaxStructSize                                 refused (an uninitialized struct)
//   ends inside a field (a field cut in two)                   refused, naming the field
//   older (first version <= struct_size < sizeof)              input: the caller's bytes are
//                                                              copied over this library's
//                                                              defaults (the *_init function's),
//                                                              so later fields keep them
//                                                              output: written up to struct_size
//   this library's size                                        copied whole / written whole
//   newer (sizeof < struct_size <= kMaxStructSize)             input: accepted when every byte
//                                                              past sizeof is 0 (the newer
//                                                              fields left at 0, which by rule
//                                                              means "as the older version
//                                                              did"), else refused naming the
//                                                              first non-zero byte; output:
//                                                              written up to sizeof, the bytes
//                                                              past it left as they are
//
// Messages name the caller's argument and the field ("config.struct_size 8 is smaller than the
// first version (80 bytes) of normuon_config_t"). A struct's table of fields (StructLayout) lists
// every field with its offset, size and alignment; StructLayoutDescribes checks at compile time
// that the table lists every field of the struct, so a field added to a header without its
// table entry fails the build.
#ifndef NORMUON_BASE_VERSIONED_STRUCT_H_
#define NORMUON_BASE_VERSIONED_STRUCT_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace normuon {

// The largest struct_size accepted: far above any version a header will declare, low enough
// that garbage in struct_size (a struct that never went through its *_init) is refused before
// the bytes past this library's struct are read.
inline constexpr uint32_t kMaxStructSize = 4096;

struct StructField {
  const char* name;
  size_t offset;
  size_t size;
  size_t align;
};

// One field of struct T, for a StructLayout's table.
#define NORMUON_STRUCT_FIELD(T, field)                                              \
  ::normuon::StructField {                                                          \
    #field, offsetof(T, field), sizeof(decltype(T::field)), alignof(decltype(T::field)) \
  }

// The byte just past `field`: where a version that ends with `field` ends.
#define NORMUON_STRUCT_END_OF(T, field) (offsetof(T, field) + sizeof(decltype(T::field)))

struct StructLayout {
  const char* arg;           // the caller's argument in messages: "config", "desc", "ops"
  const char* type;          // "normuon_config_t"
  const char* init;          // "normuon_config_init"
  size_t size;               // sizeof in this library (its newest version)
  size_t align;              // alignof
  size_t first_version;      // bytes of the first version: the end of its last field
  const StructField* fields;  // every field in order; fields[0] is the uint32_t struct_size
  size_t field_count;
};

// True when layout's table lists every field of the struct exactly: fields[0] is a 4-byte
// struct_size at offset 0, each next field starts where the previous one ends rounded up to the
// field's alignment, sizeof is the last end rounded up to the struct's alignment, and
// first_version is the end of a field.
constexpr bool StructLayoutIsExact(const StructLayout& layout) {
  if (layout.field_count == 0 || layout.fields[0].offset != 0 || layout.fields[0].size != 4) {
    return false;
  }
  auto round_up = [](size_t n, size_t a) { return (n + a - 1) / a * a; };
  size_t end = 0;
  bool first_version_is_an_end = false;
  for (size_t i = 0; i < layout.field_count; ++i) {
    const StructField& f = layout.fields[i];
    if (f.align == 0 || f.offset != round_up(end, f.align)) return false;
    end = f.offset + f.size;
    if (end == layout.first_version) first_version_is_an_end = true;
  }
  return layout.align != 0 && layout.size == round_up(end, layout.align) &&
         first_version_is_an_end;
}

namespace versioned_struct_internal {

// Converts to any field type, so that T{AnyField{}, ...} compiles exactly when T has at least
// that many fields (declared only: used in unevaluated contexts).
struct AnyField {
  template <typename U>
  constexpr operator U() const noexcept;
};

template <typename T, typename Seq, typename = void>
struct InitializableWith : std::false_type {};
template <typename T, size_t... I>
struct InitializableWith<T, std::index_sequence<I...>,
                         std::void_t<decltype(T{(static_cast<void>(I), AnyField{})...})>>
    : std::true_type {};

template <typename T, size_t N>
constexpr size_t CountFields() {
  if constexpr (InitializableWith<T, std::make_index_sequence<N + 1>>::value) {
    return CountFields<T, N + 1>();
  } else {
    return N;
  }
}

}  // namespace versioned_struct_internal

// The number of fields of a plain C struct T (no arrays or nested structs among them, as in the
// public headers): the most initializers T{...} takes.
template <typename T>
constexpr size_t StructFieldCount() {
  return versioned_struct_internal::CountFields<T, 0>();
}

// True when layout describes T exactly: as many fields as T has (StructFieldCount), T's size and
// alignment, and a table that tiles it (StructLayoutIsExact). The tables of the public structs
// are static_asserted with it, so a field added to a header without its table entry, or a
// table entry without its field, fails the build.
template <typename T>
constexpr bool StructLayoutDescribes(const StructLayout& layout) {
  return layout.size == sizeof(T) && layout.align == alignof(T) &&
         layout.field_count == StructFieldCount<T>() && StructLayoutIsExact(layout);
}

// Checks a caller's struct_size against the rules above; the bytes past this library's size
// are not looked at (CopyStructIn does that for inputs).
absl::Status CheckStructSize(uint32_t struct_size, const StructLayout& layout);

// Input struct. *out holds this library's defaults (the *_init function's). Checks in (non-null)
// and its struct_size, copies the caller's min(struct_size, layout.size) bytes over *out,
// refuses non-zero bytes past layout.size, and sets out's struct_size to layout.size, so the
// code behind the C edge always sees a complete struct of this version. *out is written only
// when the copy succeeds.
absl::Status CopyStructIn(const void* in, const StructLayout& layout, void* out);

// Output struct, before anything is computed: out is non-null and its struct_size passes
// CheckStructSize.
absl::Status CheckStructOut(const void* out, const StructLayout& layout);

// Output struct, after: writes full's bytes (a complete struct of this version) into out up to
// min(out's struct_size, layout.size); out's struct_size and every byte past that stay as they
// were. Call CheckStructOut first.
void CopyStructOut(const void* full, const StructLayout& layout, void* out);

// Typed forms. Layout must describe T.
template <typename T>
absl::StatusOr<T> CopyStructIn(const T* in, const StructLayout& layout, const T& defaults) {
  static_assert(std::is_trivially_copyable<T>::value, "public structs are plain C structs");
  T out = defaults;
  absl::Status s = CopyStructIn(static_cast<const void*>(in), layout, &out);
  if (!s.ok()) return s;
  return out;
}

}  // namespace normuon

#endif  // NORMUON_BASE_VERSIONED_STRUCT_H_
