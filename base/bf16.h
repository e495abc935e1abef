// bfloat16 on the host: the storage type and round-to-nearest-even conversion, for the CPU
// backend, the tests and the tools (the CUDA backend uses __nv_bfloat16).
#ifndef NORMUON_BF16_H_
#define NORMUON_BF16_H_

#include <cstdint>
#include <cstring>

namespace normuon {

struct Bf16 {
  uint16_t bits;
};

inline float Bf16ToFloat(Bf16 h) {
  uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Round to nearest, ties to even; NaN stays NaN (quiet).
inline Bf16 FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return Bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return Bf16{static_cast<uint16_t>(u >> 16)};
}

// The float nearest to f that bf16 can hold.
inline float RoundToBf16(float f) { return Bf16ToFloat(FloatToBf16(f)); }

}  // namespace normuon

#endif  // NORMUON_BF16_H_
