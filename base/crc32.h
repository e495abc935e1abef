// CRC-32 as zlib computes it (IEEE 802.3 polynomial, reflected 0xEDB88320, initial value and
// final xor 0xFFFFFFFF; Python's zlib.crc32 gives the same values): the checksum of the
// checkpoint format.
#ifndef NORMUON_BASE_CRC32_H_
#define NORMUON_BASE_CRC32_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace normuon {

// The CRC-32 of bytes, continuing from crc (the CRC of the bytes before them; 0 to start):
// Crc32(b, Crc32(a)) == Crc32(a + b).
uint32_t Crc32(absl::string_view bytes, uint32_t crc = 0);

}  // namespace normuon

#endif  // NORMUON_BASE_CRC32_H_
