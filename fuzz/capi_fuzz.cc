// capi_fuzz: the C API's checks of what a caller hands in (normuon/normuon.h):
// the config of normuon_create, group descriptors, and parameter descriptors of
// normuon_register_matrix / normuon_register_adamw, then finalize and one step when what was
// accepted has real buffers behind it.
//
// Input (fuzz_input.h):
//   u8 flags: bit 0 fuzz the config, bit 1 add a group, bit 2 put a NaN in the first gradient,
//             bit 3 fuzz step's lr and wd
//   config (bit 0): u8 struct_size choice (StructSize), then I32 backend, variant, ns_dtype,
//             ns_steps, nesterov, check_finite, owner_policy, and the raw bits of ns_eps, lr,
//             momentum, beta2, weight_decay, eps, adamw_lr, adamw_beta1, adamw_beta2, adamw_eps,
//             adamw_weight_decay, each behind a u8 "keep the default" switch (bit 0 set: keep),
//             then schedule (u8 switch, I32 or u8), bucket_bytes (u8 switch, U64), lr_adjust,
//             orthogonalizer (switch + I32 or u8 each), ns_norm_scale (keep switch + bits),
//             cautious_weight_decay, neuron_axis (switch + I32 or u8 each), u8 coefficient
//             choice (bit 0: replace entry (value >> 2) % size by the next F32 bits, which are
//             always read; bit 1: NULL coefficients)
//   group (bit 1): u8 struct_size choice, I32 kind, raw bits of lr, weight_decay, beta1, beta2,
//             eps, each behind a keep switch as above
//   u8 count (1 + value % 3), then per descriptor: u8 register as AdamW (bit 0), u8 struct_size
//             choice, name (u8 length <= 40 then the bytes; length 255 means a NULL name),
//             ShapeInt rows, ShapeInt cols, u8 row range choice (bit 0/1: fuzz row_begin /
//             row_count, else 0 / rows), the fuzzed values as ShapeInt, u8 dtype choice per
//             dtype (value < 200: value % 2, else I32), u8 group choice (bit 7: I32, else
//             value % 4), u8 pointer choice (0: real, 1: NULL param, 2: misaligned param,
//             3: NULL grad, else real)
//   step (bit 3): raw bits of lr and wd
// Buffers are real (sized from the descriptor) only when row_count * cols <= 4096; otherwise
// the descriptor gets a small dummy buffer, and finalize and step are skipped.
// Checks: a failed call returns a status with a non-empty message and leaves the runtime usable
// and unchanged (the memory estimate is the same; the next registration gets the next index; a
// known-good matrix still registers); an accepted descriptor satisfies every documented rule,
// its struct_size too (at least the first version; no non-zero byte past this library's struct);
// a rejected step (non-finite lr, NaN gradient with check_finite) writes no parameter; the
// handle is dead after destroy.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "normuon/normuon.h"

namespace {

using normuon_fuzz::FuzzInput;

constexpr int64_t kMaxRealElements = 4096;
constexpr int64_t kMaxElements = int64_t{1} << 40;  // the runtime's documented bound

// Writes an int32 into an enum-typed field without going through an enum conversion.
template <typename Enum>
void SetRaw(Enum* field, int32_t value) {
  static_assert(sizeof(Enum) == sizeof(int32_t), "C enums are int-sized here");
  std::memcpy(field, &value, sizeof(value));
}

// An int for an enum field: any int32, which every public enum holds (its _MIN_ENUM and
// _MAX_ENUM enumerators; RELIABILITY.md, finding F1).
int32_t EnumBits(FuzzInput& in) { return in.I32(); }

float MaybeFuzzFloat(FuzzInput& in, float def) {
  const bool keep = (in.U8() & 1) != 0;
  const float f = in.F32Bits();
  return keep ? def : f;
}

// A caller's struct with room past it for the fields of a newer header than this library's: a
// struct_size up to sizeof(T) + 16 is backed by memory, as it is for a real newer caller.
template <typename T>
struct WithTail {
  T s;
  unsigned char tail[16];
};

// A struct_size choice: this header's size, or any size up to 15 bytes past it (too small,
// inside a field, older, exact, or newer). With bit 3 of the choice, one byte of the tail (a
// newer field) is set, which the library must refuse if struct_size covers it.
template <typename T>
uint32_t StructSize(FuzzInput& in, WithTail<T>* holder) {
  std::memset(holder->tail, 0, sizeof(holder->tail));
  const uint8_t sel = in.U8();
  if (sel % 8 != 0) return sizeof(T);
  if (sel & 8) holder->tail[(sel >> 4) % sizeof(holder->tail)] = 1;
  return in.U32() % (sizeof(T) + 16);
}

// What an accepted struct_size must satisfy (normuon.h, "Versions"): at least the first
// version's size, and no non-zero byte past this library's struct within it.
template <typename T>
bool AcceptableSize(const WithTail<T>& holder, size_t first_version) {
  const uint32_t size = holder.s.struct_size;
  if (size < first_version) return false;
  for (size_t i = 0; i < sizeof(holder.tail) && sizeof(T) + i < size; ++i) {
    if (holder.tail[i] != 0) return false;
  }
  return true;
}

// Where each struct's first version ended.
constexpr size_t kConfigV1 = offsetof(normuon_config_t, adamw_weight_decay) + 4;
constexpr size_t kGroupDescV1 = sizeof(normuon_group_desc_t);
constexpr size_t kParamDescV1 = offsetof(normuon_param_desc_t, group) + 4;

bool Nonempty(const char* s) { return s != nullptr && s[0] != '\0'; }

// One descriptor's buffers: real when small, else a dummy that must never be dereferenced.
struct Buffers {
  std::vector<float> param, grad;
  bool real = false;
};

alignas(16) float g_dummy[8];

normuon_status_t Register(normuon_runtime_t rt, bool adamw, const normuon_param_desc_t* d,
                          normuon_param_t* id) {
  return adamw ? normuon_register_adamw(rt, d, id) : normuon_register_matrix(rt, d, id);
}

uint64_t Memory(normuon_runtime_t rt) {
  uint64_t bytes = 0;
  FUZZ_CHECK(normuon_memory_required(rt, &bytes) == NORMUON_SUCCESS);
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t flags = in.U8();

  WithTail<normuon_config_t> cfg_holder;
  std::memset(&cfg_holder, 0, sizeof(cfg_holder));
  normuon_config_t& cfg = cfg_holder.s;
  normuon_config_init(&cfg);
  std::vector<float> coefficients;  // config.ns_coefficients (read by create only)
  if (flags & 1) {
    cfg.struct_size = StructSize(in, &cfg_holder);
    SetRaw(&cfg.backend, (in.U8() & 1) ? EnumBits(in) : 0);
    SetRaw(&cfg.variant, (in.U8() & 1) ? EnumBits(in) : in.U8() % 3);
    SetRaw(&cfg.ns_dtype, (in.U8() & 1) ? EnumBits(in) : in.U8() % 3);
    cfg.ns_steps = (in.U8() & 1) ? in.I32() : 1 + in.U8() % 6;
    cfg.nesterov = (in.U8() & 1) ? in.I32() : in.U8() % 2;
    cfg.check_finite = (in.U8() & 1) ? in.I32() : in.U8() % 2;
    SetRaw(&cfg.owner_policy, (in.U8() & 1) ? EnumBits(in) : in.U8() % 2);
    cfg.ns_eps = MaybeFuzzFloat(in, cfg.ns_eps);
    cfg.lr = MaybeFuzzFloat(in, cfg.lr);
    cfg.momentum = MaybeFuzzFloat(in, cfg.momentum);
    cfg.beta2 = MaybeFuzzFloat(in, cfg.beta2);
    cfg.weight_decay = MaybeFuzzFloat(in, cfg.weight_decay);
    cfg.eps = MaybeFuzzFloat(in, cfg.eps);
    cfg.adamw_lr = MaybeFuzzFloat(in, cfg.adamw_lr);
    cfg.adamw_beta1 = MaybeFuzzFloat(in, cfg.adamw_beta1);
    cfg.adamw_beta2 = MaybeFuzzFloat(in, cfg.adamw_beta2);
    cfg.adamw_eps = MaybeFuzzFloat(in, cfg.adamw_eps);
    cfg.adamw_weight_decay = MaybeFuzzFloat(in, cfg.adamw_weight_decay);
    SetRaw(&cfg.schedule, (in.U8() & 1) ? EnumBits(in) : in.U8() % 3);
    if (in.U8() & 1) cfg.bucket_bytes = in.U64();
    SetRaw(&cfg.lr_adjust, (in.U8() & 1) ? EnumBits(in) : in.U8() % 4);
    SetRaw(&cfg.orthogonalizer, (in.U8() & 1) ? EnumBits(in) : in.U8() % 3);
    cfg.ns_norm_scale = MaybeFuzzFloat(in, cfg.ns_norm_scale);
    cfg.cautious_weight_decay = (in.U8() & 1) ? in.I32() : in.U8() % 2;
    SetRaw(&cfg.neuron_axis, (in.U8() & 1) ? EnumBits(in) : in.U8() % 2);
    // Custom coefficients: the quintic triple per iteration, one entry replaced by fuzz bits.
    const int steps = cfg.ns_steps < 0 ? 0 : (cfg.ns_steps > 100 ? 100 : cfg.ns_steps);
    coefficients.clear();
    for (int i = 0; i < steps; ++i) {
      coefficients.insert(coefficients.end(), {3.4445f, -4.7750f, 2.0315f});
    }
    const uint8_t which = in.U8();
    const float value = in.F32Bits();
    if (!coefficients.empty() && (which & 1)) {
      coefficients[(which >> 2) % coefficients.size()] = value;
    }
    cfg.ns_coefficients = (which & 2) ? nullptr : coefficients.data();
  }
  normuon_runtime_t rt = 0;
  if (normuon_create(&cfg, 0, &rt) != NORMUON_SUCCESS) {
    FUZZ_CHECK(rt == 0);  // *out is written on success only
    FUZZ_CHECK(Nonempty(normuon_last_error(0)));
    return 0;
  }
  FUZZ_CHECK(AcceptableSize(cfg_holder, kConfigV1));
  FUZZ_CHECK(rt != 0);

  int32_t groups = 2;
  if (flags & 2) {
    WithTail<normuon_group_desc_t> g_holder;
    std::memset(&g_holder, 0, sizeof(g_holder));
    normuon_group_desc_t& g = g_holder.s;
    normuon_group_desc_init(&g, (in.U8() & 1) ? NORMUON_GROUP_ADAMW : NORMUON_GROUP_NORMUON);
    g.struct_size = StructSize(in, &g_holder);
    if (in.U8() & 1) SetRaw(&g.kind, EnumBits(in));
    g.lr = MaybeFuzzFloat(in, g.lr);
    g.weight_decay = MaybeFuzzFloat(in, g.weight_decay);
    g.beta1 = MaybeFuzzFloat(in, g.beta1);
    g.beta2 = MaybeFuzzFloat(in, g.beta2);
    g.eps = MaybeFuzzFloat(in, g.eps);
    normuon_group_t id = -7;
    if (normuon_add_group(rt, &g, &id) == NORMUON_SUCCESS) {
      FUZZ_CHECK(id == groups);
      ++groups;
      FUZZ_CHECK(AcceptableSize(g_holder, kGroupDescV1));
      FUZZ_CHECK(std::isfinite(g.lr) && g.lr >= 0 && std::isfinite(g.weight_decay));
      FUZZ_CHECK(g.beta1 >= 0 && g.beta1 < 1 && g.beta2 >= 0 && g.beta2 < 1);
      FUZZ_CHECK(std::isfinite(g.eps) && g.eps > 0);
    } else {
      FUZZ_CHECK(id == -7);
      FUZZ_CHECK(Nonempty(normuon_last_error(rt)));
    }
  }

  const int count = 1 + in.U8() % 3;
  std::vector<std::string> names;  // accepted names
  std::vector<Buffers> buffers;    // of accepted parameters, in registration order
  buffers.reserve(count + 1);
  bool all_real = true;
  int32_t registered = 0;
  for (int i = 0; i < count; ++i) {
    const bool adamw = in.Bool();
    WithTail<normuon_param_desc_t> d_holder;
    std::memset(&d_holder, 0, sizeof(d_holder));
    normuon_param_desc_t& d = d_holder.s;
    normuon_param_desc_init(&d);
    d.struct_size = StructSize(in, &d_holder);
    const uint8_t name_len = in.U8();
    std::string name;
    if (name_len != 255) {
      const size_t n = std::min<size_t>(name_len % 41, in.remaining());
      for (size_t k = 0; k < n; ++k) name.push_back(static_cast<char>(in.U8()));
    }
    d.name = name_len == 255 ? nullptr : name.c_str();
    d.rows = in.ShapeInt();
    d.cols = in.ShapeInt();
    const uint8_t range = in.U8();
    d.row_begin = (range & 1) ? in.ShapeInt() : 0;
    d.row_count = (range & 2) ? in.ShapeInt() : d.rows;
    for (normuon_dtype_t* dt : {&d.param_dtype, &d.grad_dtype}) {
      const uint8_t sel = in.U8();
      SetRaw(dt, sel < 200 ? sel % 2 : EnumBits(in));
    }
    const uint8_t gsel = in.U8();
    d.group = (gsel & 0x80) ? in.I32() : gsel % 4;

    Buffers b;
    int64_t elems = 0;
    if (d.row_count > 0 && d.cols > 0 && d.row_count <= kMaxRealElements / d.cols) {
      elems = d.row_count * d.cols;
      b.real = true;
      b.param.resize(elems);
      b.grad.resize(elems);
      for (int64_t k = 0; k < elems; ++k) {
        b.param[k] = 0.01f * static_cast<float>((k * 7) % 13) - 0.05f;
        b.grad[k] = 0.1f * static_cast<float>((k * 5) % 11) - 0.5f;
      }
      if ((flags & 4) && registered == 0) b.grad[0] = std::nanf("");
      d.param = b.param.data();
      d.grad = b.grad.data();
    } else {
      d.param = g_dummy;
      d.grad = g_dummy;
    }
    switch (in.U8() % 8) {
      case 1: d.param = nullptr; break;
      case 2: d.param = reinterpret_cast<char*>(d.param) + 1; break;
      case 3: d.grad = nullptr; break;
      default: break;
    }

    const uint64_t memory_before = Memory(rt);
    normuon_param_t id = -7;
    const normuon_status_t st = Register(rt, adamw, &d, &id);
    if (st == NORMUON_SUCCESS) {
      FUZZ_CHECK(id == registered);
      ++registered;
      // What was accepted obeys every documented rule.
      FUZZ_CHECK(AcceptableSize(d_holder, kParamDescV1));
      FUZZ_CHECK(Nonempty(d.name));
      for (const std::string& other : names) FUZZ_CHECK(other != d.name);
      FUZZ_CHECK(d.rows > 0 && d.cols > 0 && d.rows <= kMaxElements / d.cols);
      FUZZ_CHECK(d.row_begin >= 0 && d.row_begin <= d.rows);
      FUZZ_CHECK(d.row_count >= 0 && d.row_count <= d.rows - d.row_begin);
      FUZZ_CHECK(d.group == -1 || (d.group >= 0 && d.group < groups));  // -1: kind's default
      if (d.row_count > 0) FUZZ_CHECK(d.param != nullptr);
      names.push_back(d.name);
      all_real = all_real && b.real && d.param != nullptr &&
                 reinterpret_cast<uintptr_t>(d.param) % 4 == 0;
      buffers.push_back(std::move(b));
    } else {
      FUZZ_CHECK(id == -7);
      FUZZ_CHECK(st == NORMUON_ERROR_INVALID_ARGUMENT);
      FUZZ_CHECK(Nonempty(normuon_last_error(rt)));
      FUZZ_CHECK(Memory(rt) == memory_before);  // nothing was kept
    }
  }

  // Whatever failed before, a known-good matrix still registers, with the next index.
  std::string probe = "probe";
  for (bool clash = true; clash;) {
    clash = false;
    for (const std::string& n : names) clash = clash || n == probe;
    if (clash) probe += "+";
  }
  Buffers pb;
  pb.real = true;
  pb.param.assign(8 * 4, 0.25f);
  pb.grad.assign(8 * 4, -0.125f);
  normuon_param_desc_t good;
  normuon_param_desc_init(&good);
  good.name = probe.c_str();
  good.rows = 8;
  good.cols = 4;
  good.row_count = 8;
  good.param = pb.param.data();
  good.grad = pb.grad.data();
  good.group = NORMUON_GROUP_MATRIX_DEFAULT;
  normuon_param_t probe_id = -1;
  FUZZ_CHECK(normuon_register_matrix(rt, &good, &probe_id) == NORMUON_SUCCESS);
  FUZZ_CHECK(probe_id == registered);
  buffers.push_back(std::move(pb));

  if (all_real) {
    const normuon_status_t fin = normuon_finalize(rt);
    if (fin != NORMUON_SUCCESS) {
      FUZZ_CHECK(Nonempty(normuon_last_error(rt)));
      FUZZ_CHECK(normuon_step(rt, 0.01f, 0.0f, nullptr) == NORMUON_ERROR_INVALID_STATE);
    } else {
      float lr = 0.01f, wd = 0.0f;
      if (flags & 8) {
        lr = in.F32Bits();
        wd = in.F32Bits();
      }
      std::vector<std::vector<float>> before;
      for (const Buffers& b : buffers) before.push_back(b.param);
      const normuon_status_t st = normuon_step(rt, lr, wd, nullptr);
      if (st != NORMUON_SUCCESS) {
        FUZZ_CHECK(Nonempty(normuon_last_error(rt)));
        FUZZ_CHECK(st == NORMUON_ERROR_INVALID_ARGUMENT || st == NORMUON_ERROR_NONFINITE);
        // A refused or skipped step writes no parameter.
        for (size_t k = 0; k < buffers.size(); ++k) {
          FUZZ_CHECK(std::memcmp(before[k].data(), buffers[k].param.data(),
                                 before[k].size() * sizeof(float)) == 0);
        }
      }
      normuon_step_info_t info;
      normuon_step_info_init(&info);
      FUZZ_CHECK(normuon_step_result(rt, &info) == NORMUON_SUCCESS);
      FUZZ_CHECK(info.steps_taken + info.steps_skipped <= 1);
      for (normuon_param_t p = 0; p <= registered; ++p) {
        for (int kind = NORMUON_STATE_MOMENTUM; kind <= NORMUON_STATE_STEP; ++kind) {
          uint64_t bytes = 0;
          const auto k = static_cast<normuon_state_kind_t>(kind);
          FUZZ_CHECK(normuon_state_size(rt, p, k, &bytes) == NORMUON_SUCCESS);
          if (bytes == 0 || bytes > (uint64_t{1} << 20)) continue;
          std::vector<char> state(bytes);
          FUZZ_CHECK(normuon_get_state(rt, p, k, state.data(), bytes) == NORMUON_SUCCESS);
          FUZZ_CHECK(normuon_set_state(rt, p, k, state.data(), bytes) == NORMUON_SUCCESS);
        }
      }
    }
  }

  FUZZ_CHECK(normuon_destroy(rt) == NORMUON_SUCCESS);
  FUZZ_CHECK(normuon_destroy(rt) == NORMUON_ERROR_INVALID_HANDLE);
  FUZZ_CHECK(normuon_step(rt, 0.01f, 0.0f, nullptr) == NORMUON_ERROR_INVALID_HANDLE);
  return 0;
}
