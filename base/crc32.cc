// See crc32.h: zlib's crc32_z, which takes a size_t length.
#include "base/crc32.h"

#include <zlib.h>

namespace normuon {

uint32_t Crc32(absl::string_view bytes, uint32_t crc) {
  if (bytes.empty()) return crc;
  return static_cast<uint32_t>(
      crc32_z(crc, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

}  // namespace normuon
