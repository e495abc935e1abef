// fuzz_input.h: reads typed values off the front of a fuzzer's input bytes.
//
// The structured fuzzers (registration, shard, C API) build their arguments from the input with
// this reader instead of treating it as text. Every read is defined for every input: once the
// bytes run out, integers read as 0, and strings as empty. The layout is documented in each
// fuzzer and reproduced by fuzz/make_corpus.py, which writes the seed corpora.
#ifndef NORMUON_FUZZ_FUZZ_INPUT_H_
#define NORMUON_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace normuon_fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t remaining() const { return size_ - pos_; }
  bool empty() const { return pos_ >= size_; }

  uint8_t U8() {
    if (pos_ >= size_) return 0;
    return data_[pos_++];
  }
  bool Bool() { return (U8() & 1) != 0; }

  // Little-endian, whatever the host; missing bytes are zero.
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(U8()) << (8 * i);
    return v;
  }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(U8()) << (8 * i);
    return v;
  }
  int32_t I32() { return static_cast<int32_t>(U32()); }
  int64_t I64() { return static_cast<int64_t>(U64()); }

  // The raw bits of a float (NaN, Inf, negative zero and denormals included).
  float F32Bits() {
    const uint32_t bits = U32();
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
  }

  // An int64 biased towards the values that matter to shape checks. The selector byte picks:
  // 0-3 a small value in [-2, 253]; 4 a value near an int64 or int32 boundary; 5-7 any int64.
  int64_t ShapeInt() {
    const uint8_t sel = U8() & 7;
    if (sel <= 3) return static_cast<int64_t>(U8()) - 2;
    if (sel == 4) {
      static const int64_t kEdges[] = {
          0,
          1,
          -1,
          INT64_MAX,
          INT64_MIN,
          INT64_MAX / 2,
          INT64_MAX / 8,
          (int64_t{1} << 40),
          (int64_t{1} << 40) + 1,
          (int64_t{1} << 31),
          (int64_t{1} << 32),
          (int64_t{1} << 32) + 1,
          70000,
          3037000500,  // ~sqrt(2^63)
          1073741824,  // 2^30
      };
      return kEdges[U8() % (sizeof(kEdges) / sizeof(kEdges[0]))];
    }
    return I64();
  }

  // A string of up to max_len bytes: a length byte, then that many bytes (fewer if the input
  // ends). May hold any byte, '\0' included.
  std::string Bytes(size_t max_len) {
    size_t n = U8();
    if (n > max_len) n = max_len;
    if (n > remaining()) n = remaining();
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

  // Everything left.
  std::string Rest() {
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_ - pos_);
    pos_ = size_;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Aborts with a message: a broken property, not a crash the sanitizers would see by themselves.
// Used instead of assert() so it also fires in builds with NDEBUG.
[[noreturn]] void PropertyFailed(const char* file, int line, const char* what);

}  // namespace normuon_fuzz

#define FUZZ_CHECK(cond)                                                       \
  do {                                                                         \
    if (!(cond)) ::normuon_fuzz::PropertyFailed(__FILE__, __LINE__, #cond);   \
  } while (0)

#endif  // NORMUON_FUZZ_FUZZ_INPUT_H_
