// See versioned_struct.h.
#include "base/versioned_struct.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace normuon {
namespace {

uint32_t LoadStructSize(const void* p) {
  uint32_t size;
  std::memcpy(&size, p, sizeof(size));  // struct_size is the first field of every struct
  return size;
}

std::string Fix(const StructLayout& layout) {
  return absl::StrCat(": fill the struct with ", layout.init, " before setting its fields");
}

}  // namespace

absl::Status CheckStructSize(uint32_t n, const StructLayout& layout) {
  if (n < sizeof(uint32_t) || n < layout.first_version) {
    return absl::InvalidArgumentError(absl::StrCat(
        layout.arg, ".struct_size ", n, " is smaller than the first version (",
        layout.first_version, " bytes) of ", layout.type, Fix(layout)));
  }
  if (n > kMaxStructSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        layout.arg, ".struct_size ", n, " is larger than any version of ", layout.type,
        " (at most ", kMaxStructSize, " bytes; this library's is ", layout.size, ")",
        Fix(layout)));
  }
  for (size_t i = 0; i < layout.field_count; ++i) {
    const StructField& f = layout.fields[i];
    if (n > f.offset && n < f.offset + f.size) {
      return absl::InvalidArgumentError(absl::StrCat(
          layout.arg, ".struct_size ", n, " ends inside field ", f.name, " (bytes ", f.offset,
          " to ", f.offset + f.size - 1, ") of ", layout.type, " (", layout.size, " bytes)",
          Fix(layout)));
    }
  }
  return absl::OkStatus();
}

absl::Status CopyStructIn(const void* in, const StructLayout& layout, void* out) {
  if (in == nullptr) return absl::InvalidArgumentError(absl::StrCat(layout.arg, " is NULL"));
  const uint32_t n = LoadStructSize(in);
  absl::Status s = CheckStructSize(n, layout);
  if (!s.ok()) return s;
  const unsigned char* bytes = static_cast<const unsigned char*>(in);
  for (size_t at = layout.size; at < n; ++at) {
    if (bytes[at] != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          layout.arg, ".struct_size ", n, " is larger than this library's ", layout.type, " (",
          layout.size, " bytes) and byte ", at, " is ", static_cast<int>(bytes[at]),
          ", not 0: a field of a newer header that this library does not have is set; link a "
          "newer libnormuon, or leave that field 0"));
    }
  }
  std::memcpy(out, in, std::min<size_t>(n, layout.size));
  const uint32_t full = static_cast<uint32_t>(layout.size);
  std::memcpy(out, &full, sizeof(full));
  return absl::OkStatus();
}

absl::Status CheckStructOut(const void* out, const StructLayout& layout) {
  if (out == nullptr) return absl::InvalidArgumentError(absl::StrCat(layout.arg, " is NULL"));
  return CheckStructSize(LoadStructSize(out), layout);
}

void CopyStructOut(const void* full, const StructLayout& layout, void* out) {
  const size_t n = std::min<size_t>(LoadStructSize(out), layout.size);
  if (n <= sizeof(uint32_t)) return;
  std::memcpy(static_cast<unsigned char*>(out) + sizeof(uint32_t),
              static_cast<const unsigned char*>(full) + sizeof(uint32_t), n - sizeof(uint32_t));
}

}  // namespace normuon
