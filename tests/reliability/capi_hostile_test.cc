// The C API under hostile use (issue 6): dead and made-up handles, NULL pointers, struct sizes
// that are too small, enum values out of range, non-finite hyper-parameters, shapes whose byte
// counts overflow 32 or 64 bits. Every case must give a status and a message naming the field,
// change nothing, and leave the handle usable; nothing may crash. The threaded cases are in
// capi_threads_test.cc.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tests/reliability/test_util.h"

namespace normuon_reliability {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();

// Writes an int into an enum-typed field the way a C caller can (any int value is legal C).
template <typename Enum>
void SetRaw(Enum* field, int32_t value) {
  static_assert(sizeof(Enum) == sizeof(int32_t), "C enums are int-sized here");
  std::memcpy(field, &value, sizeof(value));
}

template <typename Enum>
Enum RawEnum(int32_t value) {
  Enum e;
  SetRaw(&e, value);
  return e;
}

// Every function that takes a runtime handle, called on `rt` with otherwise valid arguments.
// Returns the statuses in a fixed order (names in kRuntimeFunctions).
const char* const kRuntimeFunctions[] = {
    "destroy",        "add_group",          "set_group_lr",      "register_matrix",
    "register_adamw", "finalize",           "memory_required",   "bind",
    "step",           "grad_ready",         "step_result",       "last_step_profile",
    "last_step_trace", "state_size",        "get_state",         "set_state",
    "save_checkpoint", "load_checkpoint",   "step_cancel"};

std::vector<normuon_status_t> CallEverything(normuon_runtime_t rt) {
  std::vector<float> w(32, 0.5f), g(32, 0.25f);
  normuon_group_desc_t group;
  normuon_group_desc_init(&group, NORMUON_GROUP_NORMUON);
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  d.name = "w";
  d.rows = 8;
  d.cols = 4;
  d.row_count = 8;
  d.param = w.data();
  d.grad = g.data();
  d.group = NORMUON_GROUP_MATRIX_DEFAULT;
  normuon_param_desc_t a = d;
  a.name = "a";
  a.group = NORMUON_GROUP_ADAMW_DEFAULT;
  normuon_group_t gid = -1;
  normuon_param_t pid = -1;
  uint64_t bytes = 0;
  normuon_step_info_t info;
  normuon_step_info_init(&info);
  normuon_step_profile_t profile;
  normuon_step_profile_init(&profile);
  char trace[16];
  uint64_t needed = 0;
  std::vector<float> state(32);
  const normuon_param_t ready[1] = {0};

  std::vector<normuon_status_t> s;
  // destroy goes last so the other calls see the handle in the state the caller gave.
  s.push_back(normuon_add_group(rt, &group, &gid));
  s.push_back(normuon_set_group_lr(rt, 0, 0.01f, 0.0f));
  s.push_back(normuon_register_matrix(rt, &d, &pid));
  s.push_back(normuon_register_adamw(rt, &a, &pid));
  s.push_back(normuon_finalize(rt));
  s.push_back(normuon_memory_required(rt, &bytes));
  s.push_back(normuon_bind(rt, 0, w.data(), g.data()));
  s.push_back(normuon_step(rt, 0.01f, 0.0f, nullptr));
  s.push_back(normuon_grad_ready(rt, ready, 1, nullptr));
  s.push_back(normuon_step_result(rt, &info));
  s.push_back(normuon_last_step_profile(rt, &profile));
  s.push_back(normuon_last_step_trace(rt, trace, sizeof(trace), &needed));
  s.push_back(normuon_state_size(rt, 0, NORMUON_STATE_MOMENTUM, &bytes));
  s.push_back(normuon_get_state(rt, 0, NORMUON_STATE_MOMENTUM, state.data(), 128));
  s.push_back(normuon_set_state(rt, 0, NORMUON_STATE_MOMENTUM, state.data(), 128));
  s.push_back(normuon_save_checkpoint(rt, "/nonexistent-normuon-dir"));
  s.push_back(normuon_load_checkpoint(rt, "/nonexistent-normuon-dir"));
  s.push_back(normuon_step_cancel(rt));
  s.insert(s.begin(), normuon_destroy(rt));
  return s;
}

TEST(HandleTest, HandleZeroAndMadeUpHandlesAreInvalidInEveryFunction) {
  const normuon_runtime_t handles[] = {0, 1, 0xffffffffffffffffull, 0x0000000500000002ull,
                                       0x8000000000000000ull};
  for (normuon_runtime_t h : handles) {
    const std::vector<normuon_status_t> s = CallEverything(h);
    ASSERT_EQ(s.size(), sizeof(kRuntimeFunctions) / sizeof(kRuntimeFunctions[0]));
    for (size_t i = 0; i < s.size(); ++i) {
      EXPECT_EQ(s[i], NORMUON_ERROR_INVALID_HANDLE)
          << "normuon_" << kRuntimeFunctions[i] << " on handle " << h;
    }
    // The message of a failed lookup lives on the calling thread.
    EXPECT_TRUE(Contains(LastError(0), "handle")) << h;
    EXPECT_NE(normuon_last_error(h), nullptr);
  }
}

TEST(HandleTest, DoubleDestroyAndEveryCallAfterDestroyReportInvalidHandle) {
  SmallModel m;
  m.Build(/*finalize=*/true);
  const normuon_runtime_t dead = m.rt;
  ASSERT_EQ(normuon_step(dead, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(dead);
  ASSERT_EQ(normuon_destroy(dead), NORMUON_SUCCESS);
  m.rt = 0;
  EXPECT_EQ(normuon_destroy(dead), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_TRUE(Contains(LastError(0), std::to_string(dead)));
  const std::vector<normuon_status_t> s = CallEverything(dead);
  for (size_t i = 0; i < s.size(); ++i) {
    EXPECT_EQ(s[i], NORMUON_ERROR_INVALID_HANDLE) << "normuon_" << kRuntimeFunctions[i];
  }
  // A new runtime never gets the dead handle's id, and the dead one stays dead.
  SmallModel n;
  n.Build(/*finalize=*/true);
  EXPECT_NE(n.rt, dead);
  EXPECT_EQ(normuon_step(n.rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(n.rt);
  EXPECT_EQ(normuon_step(dead, 0.01f, 0.0f, nullptr), NORMUON_ERROR_INVALID_HANDLE);
}

TEST(HandleTest, CommunicatorHandlesSurviveDoubleDestroyAndUseAfterDestroy) {
  normuon_comm_t comms[2] = {0, 0};
  ASSERT_EQ(normuon_comm_create_inprocess_group(2, 5.0, comms), NORMUON_SUCCESS);
  for (normuon_comm_t c : comms) ASSERT_EQ(normuon_comm_destroy(c), NORMUON_SUCCESS);
  for (normuon_comm_t c : comms) {
    int32_t v = -1;
    normuon_status_t err = NORMUON_SUCCESS;
    EXPECT_EQ(normuon_comm_destroy(c), NORMUON_ERROR_INVALID_HANDLE);
    EXPECT_EQ(normuon_comm_rank(c, &v), NORMUON_ERROR_INVALID_HANDLE);
    EXPECT_EQ(normuon_comm_world_size(c, &v), NORMUON_ERROR_INVALID_HANDLE);
    EXPECT_EQ(normuon_comm_abort(c), NORMUON_ERROR_INVALID_HANDLE);
    EXPECT_EQ(normuon_comm_get_async_error(c, &err), NORMUON_ERROR_INVALID_HANDLE);
    EXPECT_EQ(normuon_comm_inject_fault(c, NORMUON_FAULT_ERROR, 0), NORMUON_ERROR_INVALID_HANDLE);
    EXPECT_EQ(v, -1);
    EXPECT_NE(normuon_comm_last_error(c), nullptr);
    // A destroyed communicator cannot be handed to a runtime either.
    normuon_config_t cfg;
    normuon_config_init(&cfg);
    normuon_runtime_t rt = 0;
    EXPECT_EQ(normuon_create(&cfg, c, &rt), NORMUON_ERROR_INVALID_HANDLE);
    EXPECT_EQ(rt, 0u);
    EXPECT_TRUE(Contains(LastError(0), "comm"));
  }
}

TEST(NullPointerTest, EveryPointerArgumentMayBeNullAndIsNamed) {
  // The init functions and status names accept anything.
  normuon_config_init(nullptr);
  normuon_group_desc_init(nullptr, NORMUON_GROUP_NORMUON);
  normuon_param_desc_init(nullptr);
  normuon_step_info_init(nullptr);
  normuon_step_profile_init(nullptr);
  normuon_comm_ops_init(nullptr);
  EXPECT_NE(normuon_status_string(RawEnum<normuon_status_t>(1000)), nullptr);
  EXPECT_NE(normuon_status_string(RawEnum<normuon_status_t>(0x7fffffff)), nullptr);

  normuon_config_t cfg;
  normuon_config_init(&cfg);
  normuon_runtime_t out = 0;
  EXPECT_EQ(normuon_create(nullptr, 0, &out), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "config"));
  EXPECT_EQ(normuon_create(&cfg, 0, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "out"));
  EXPECT_EQ(out, 0u);

  SmallModel m;
  m.Build(/*finalize=*/false);
  const normuon_runtime_t rt = m.rt;
  normuon_group_desc_t group;
  normuon_group_desc_init(&group, NORMUON_GROUP_NORMUON);
  normuon_group_t gid = -1;
  EXPECT_EQ(normuon_add_group(rt, nullptr, &gid), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "desc"));
  EXPECT_EQ(normuon_add_group(rt, &group, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "out"));

  std::vector<float> w2(32), g2(32);
  normuon_param_desc_t d = m.MatrixDesc();
  d.name = "w2";
  d.param = w2.data();
  d.grad = g2.data();
  normuon_param_t pid = -1;
  EXPECT_EQ(normuon_register_matrix(rt, nullptr, &pid), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "desc"));
  EXPECT_EQ(normuon_register_matrix(rt, &d, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "out"));
  EXPECT_EQ(normuon_register_adamw(rt, nullptr, &pid), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "desc"));
  d.name = nullptr;
  EXPECT_EQ(normuon_register_matrix(rt, &d, &pid), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "desc.name"));
  d.name = "w2";
  d.param = nullptr;
  EXPECT_EQ(normuon_register_matrix(rt, &d, &pid), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "param"));
  EXPECT_EQ(pid, -1);
  EXPECT_EQ(normuon_memory_required(rt, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "bytes"));
  EXPECT_EQ(normuon_bind(rt, m.w_id, nullptr, m.gw.data()), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "param"));

  ASSERT_EQ(normuon_finalize(rt), NORMUON_SUCCESS) << LastError(rt);
  EXPECT_EQ(normuon_grad_ready(rt, nullptr, 1, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "params"));
  EXPECT_EQ(normuon_step_result(rt, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "info"));
  EXPECT_EQ(normuon_last_step_profile(rt, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "profile"));
  uint64_t needed = 0;
  EXPECT_EQ(normuon_last_step_trace(rt, nullptr, 16, &needed), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "buf"));
  char buf[8];
  EXPECT_EQ(normuon_last_step_trace(rt, buf, sizeof(buf), nullptr),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "needed"));
  EXPECT_EQ(normuon_state_size(rt, m.w_id, NORMUON_STATE_MOMENTUM, nullptr),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "bytes"));
  EXPECT_EQ(normuon_get_state(rt, m.w_id, NORMUON_STATE_MOMENTUM, nullptr, 128),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "dst"));
  EXPECT_EQ(normuon_set_state(rt, m.w_id, NORMUON_STATE_MOMENTUM, nullptr, 128),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "src"));
  EXPECT_EQ(normuon_save_checkpoint(rt, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "dir"));
  EXPECT_EQ(normuon_load_checkpoint(rt, ""), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "dir"));

  // After all of that the runtime steps exactly as one that never saw a bad call.
  ASSERT_EQ(normuon_step(rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(rt);
  SmallModel clean;
  clean.Build(/*finalize=*/true);
  ASSERT_EQ(normuon_step(clean.rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS);
  EXPECT_EQ(0, std::memcmp(m.w.data(), clean.w.data(), m.w.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(m.b.data(), clean.b.data(), m.b.size() * sizeof(float)));
}

TEST(NullPointerTest, CommunicatorFunctionsNameTheirNullArguments) {
  EXPECT_EQ(normuon_comm_create_inprocess_group(2, 5.0, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(normuon_comm_last_error(0), "out"));
  normuon_comm_t c = 0;
  EXPECT_EQ(normuon_comm_create_custom(nullptr, &c), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(normuon_comm_last_error(0), "ops"));
  EXPECT_EQ(c, 0u);
  normuon_comm_t comms[1] = {0};
  ASSERT_EQ(normuon_comm_create_inprocess_group(1, 5.0, comms), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_comm_rank(comms[0], nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(normuon_comm_world_size(comms[0], nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(normuon_comm_get_async_error(comms[0], nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_STRNE(normuon_comm_last_error(comms[0]), "");
  EXPECT_EQ(normuon_comm_destroy(comms[0]), NORMUON_SUCCESS);
}

TEST(StructSizeTest, EveryStructWithTooSmallASizeIsRejectedNamingIt) {
  normuon_config_t cfg;
  normuon_config_init(&cfg);
  normuon_runtime_t rt = 0;
  for (uint32_t size : {0u, 4u, 7u, 8u, 76u}) {
    cfg.struct_size = size;
    EXPECT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT) << size;
    EXPECT_TRUE(Contains(LastError(0), "config.struct_size " + std::to_string(size) +
                                           " is smaller than the first version (80 bytes)"))
        << size;
    EXPECT_EQ(rt, 0u);
  }
  // The first version (through adamw_weight_decay) is accepted, every later field keeping its
  // default (tests/reliability/struct_versions_test.cc has every struct's versions).
  cfg.struct_size = 80;
  cfg.schedule = static_cast<normuon_schedule_t>(99);  // beyond the caller's struct: never read
  ASSERT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_SUCCESS) << LastError(0);
  EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);

  SmallModel m;
  m.Build(/*finalize=*/false);
  normuon_group_desc_t group;
  normuon_group_desc_init(&group, NORMUON_GROUP_ADAMW);
  group.struct_size = sizeof(group) - 4;
  normuon_group_t gid = -1;
  EXPECT_EQ(normuon_add_group(m.rt, &group, &gid), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "desc.struct_size"));
  EXPECT_EQ(gid, -1);

  std::vector<float> w2(32), g2(32);
  normuon_param_desc_t d = m.MatrixDesc();
  d.name = "w2";
  d.param = w2.data();
  d.grad = g2.data();
  normuon_param_t pid = -1;
  for (uint32_t size : {0u, 79u, static_cast<uint32_t>(offsetof(normuon_param_desc_t,
                                                                num_row_splits) + 1)}) {
    d.struct_size = size;
    EXPECT_EQ(normuon_register_matrix(m.rt, &d, &pid), NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(m.rt), "desc.struct_size"));
    EXPECT_EQ(normuon_register_adamw(m.rt, &d, &pid), NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(m.rt), "desc.struct_size"));
  }
  EXPECT_EQ(pid, -1);

  ASSERT_EQ(normuon_finalize(m.rt), NORMUON_SUCCESS) << LastError(m.rt);
  ASSERT_EQ(normuon_step(m.rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(m.rt);
  normuon_step_info_t info;
  normuon_step_info_init(&info);
  info.struct_size = sizeof(info) - 1;
  EXPECT_EQ(normuon_step_result(m.rt, &info), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "info.struct_size"));
  normuon_step_profile_t profile;
  normuon_step_profile_init(&profile);
  profile.struct_size = 0;
  EXPECT_EQ(normuon_last_step_profile(m.rt, &profile), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "profile.struct_size"));

  normuon_comm_ops_t ops;
  normuon_comm_ops_init(&ops);
  ops.struct_size = 4;
  normuon_comm_t c = 0;
  EXPECT_EQ(normuon_comm_create_custom(&ops, &c), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(normuon_comm_last_error(0), "ops.struct_size"));
  EXPECT_EQ(c, 0u);
}

// Collectives that must never be reached: the runtime refuses the communicator first.
normuon_status_t UnreachableExchange(void*, const normuon_p2p_t*, int32_t, const normuon_p2p_t*,
                                     int32_t, void*) {
  return NORMUON_ERROR_INTERNAL;
}
normuon_status_t UnreachableAllReduce(void*, const float*, float*, uint64_t, void*) {
  return NORMUON_ERROR_INTERNAL;
}
normuon_status_t UnreachableAllGather(void*, const void*, void*, uint64_t, void*) {
  return NORMUON_ERROR_INTERNAL;
}

// The step's buffers are backend memory and the communicator moves them as they are, so a
// backend and a communicator on different kinds of memory are refused at create, naming both.
TEST(MemoryKindTest, BackendAndCommunicatorOnDifferentMemoryAreRefusedAtCreate) {
  normuon_comm_ops_t ops;
  normuon_comm_ops_init(&ops);
  ops.rank = 0;
  ops.world_size = 2;
  ops.exchange = UnreachableExchange;
  ops.all_reduce_sum_f32 = UnreachableAllReduce;
  ops.all_gather = UnreachableAllGather;
  ops.device_memory = 1;
  normuon_comm_t device_comm = 0;
  ASSERT_EQ(normuon_comm_create_custom(&ops, &device_comm), NORMUON_SUCCESS);
  normuon_config_t cpu;
  normuon_config_init(&cpu);
  cpu.backend = NORMUON_BACKEND_CPU;
  normuon_runtime_t rt = 0;
  EXPECT_EQ(normuon_create(&cpu, device_comm, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "moves device memory, but config.backend is CPU"));
  EXPECT_EQ(rt, 0u);
  EXPECT_EQ(normuon_comm_destroy(device_comm), NORMUON_SUCCESS);

  normuon_comm_t host[2] = {0, 0};
  ASSERT_EQ(normuon_comm_create_inprocess_group(2, 5.0, host), NORMUON_SUCCESS);
  normuon_config_t cuda;
  normuon_config_init(&cuda);
  cuda.backend = NORMUON_BACKEND_CUDA;
  EXPECT_EQ(normuon_create(&cuda, host[0], &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "the CUDA sharded step needs a device communicator"));
  EXPECT_EQ(rt, 0u);
  for (normuon_comm_t h : host) EXPECT_EQ(normuon_comm_destroy(h), NORMUON_SUCCESS);
}

// A C caller may put any int into an enum field; each must be refused with the field's name.
// Negative values are in open_findings_test.cc (finding F1: they are still undefined behaviour
// to load in C++).
TEST(EnumRangeTest, OutOfRangeEnumValuesAreRejectedNamingTheField) {
  struct ConfigCase {
    const char* field;
    void (*set)(normuon_config_t*);
  };
  const ConfigCase cases[] = {
      {"config.backend", [](normuon_config_t* c) { SetRaw(&c->backend, 7); }},
      {"config.backend", [](normuon_config_t* c) { SetRaw(&c->backend, 0x7fffffff); }},
      {"config.variant", [](normuon_config_t* c) { SetRaw(&c->variant, 42); }},
      {"config.ns_dtype", [](normuon_config_t* c) { SetRaw(&c->ns_dtype, 3); }},
      {"config.owner_policy", [](normuon_config_t* c) { SetRaw(&c->owner_policy, 99); }},
      {"config.lr_adjust", [](normuon_config_t* c) { SetRaw(&c->lr_adjust, 9); }},
      {"config.orthogonalizer", [](normuon_config_t* c) { SetRaw(&c->orthogonalizer, 9); }},
      {"config.neuron_axis", [](normuon_config_t* c) { SetRaw(&c->neuron_axis, 5); }},
      {"config.cautious_weight_decay", [](normuon_config_t* c) { c->cautious_weight_decay = 2; }},
      {"config.nesterov", [](normuon_config_t* c) { c->nesterov = -1; }},
      {"config.check_finite", [](normuon_config_t* c) { c->check_finite = 3; }},
      {"config.ns_steps", [](normuon_config_t* c) { c->ns_steps = 0; }},
      {"config.api_version", [](normuon_config_t* c) { c->api_version = 0; }},
  };
  for (const ConfigCase& k : cases) {
    normuon_config_t cfg;
    normuon_config_init(&cfg);
    k.set(&cfg);
    normuon_runtime_t rt = 0;
    EXPECT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT) << k.field;
    EXPECT_TRUE(Contains(LastError(0), k.field));
    EXPECT_EQ(rt, 0u);
  }

  SmallModel m;
  m.Build(/*finalize=*/false);
  normuon_group_desc_t group;
  normuon_group_desc_init(&group, NORMUON_GROUP_NORMUON);
  SetRaw(&group.kind, 5);
  normuon_group_t gid = -1;
  EXPECT_EQ(normuon_add_group(m.rt, &group, &gid), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "kind"));

  std::vector<float> w2(32), g2(32);
  normuon_param_desc_t d = m.MatrixDesc();
  d.name = "w2";
  d.param = w2.data();
  d.grad = g2.data();
  normuon_param_t pid = -1;
  SetRaw(&d.param_dtype, 3);
  EXPECT_EQ(normuon_register_matrix(m.rt, &d, &pid), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "desc.param_dtype"));
  d.param_dtype = NORMUON_DTYPE_FP32;
  SetRaw(&d.grad_dtype, 1 << 20);
  EXPECT_EQ(normuon_register_matrix(m.rt, &d, &pid), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "desc.grad_dtype"));
  EXPECT_EQ(pid, -1);

  ASSERT_EQ(normuon_finalize(m.rt), NORMUON_SUCCESS) << LastError(m.rt);
  const normuon_state_kind_t bad_kind = RawEnum<normuon_state_kind_t>(17);
  uint64_t bytes = 12345;
  std::vector<float> buf(64);
  EXPECT_EQ(normuon_state_size(m.rt, m.w_id, bad_kind, &bytes), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "kind"));
  EXPECT_EQ(bytes, 12345u);
  EXPECT_EQ(normuon_get_state(m.rt, m.w_id, bad_kind, buf.data(), 128),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "kind"));
  EXPECT_EQ(normuon_set_state(m.rt, m.w_id, bad_kind, buf.data(), 128),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "kind"));

  normuon_comm_t comms[2] = {0, 0};
  ASSERT_EQ(normuon_comm_create_inprocess_group(2, 5.0, comms), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_comm_inject_fault(comms[0], RawEnum<normuon_fault_t>(4), 0),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(normuon_comm_last_error(comms[0]), "fault"));
  for (normuon_comm_t c : comms) EXPECT_EQ(normuon_comm_destroy(c), NORMUON_SUCCESS);
}

TEST(NonFiniteTest, NonFiniteConfigHyperParametersAreRejectedNamingTheField) {
  struct Case {
    const char* field;  // a part of the message that names the field
    const char* alt;    // another acceptable name (the group field the config field fills)
    void (*set)(normuon_config_t*);
  };
  const Case cases[] = {
      {"lr", "lr", [](normuon_config_t* c) { c->lr = kNaN; }},
      {"lr", "lr", [](normuon_config_t* c) { c->lr = kInf; }},
      {"momentum", "beta1", [](normuon_config_t* c) { c->momentum = kNaN; }},
      {"beta2", "beta2", [](normuon_config_t* c) { c->beta2 = -kInf; }},
      {"weight_decay", "weight_decay", [](normuon_config_t* c) { c->weight_decay = kInf; }},
      {"eps", "eps", [](normuon_config_t* c) { c->eps = kNaN; }},
      {"ns_eps", "ns_eps", [](normuon_config_t* c) { c->ns_eps = kInf; }},
      {"adamw_lr", "lr", [](normuon_config_t* c) { c->adamw_lr = kNaN; }},
      {"adamw_beta1", "beta1", [](normuon_config_t* c) { c->adamw_beta1 = kInf; }},
      {"adamw_beta2", "beta2", [](normuon_config_t* c) { c->adamw_beta2 = kNaN; }},
      {"adamw_eps", "eps", [](normuon_config_t* c) { c->adamw_eps = -kInf; }},
      {"adamw_weight_decay", "weight_decay",
       [](normuon_config_t* c) { c->adamw_weight_decay = kNaN; }},
      {"ns_norm_scale", "ns_norm_scale", [](normuon_config_t* c) { c->ns_norm_scale = kNaN; }},
      {"ns_norm_scale", "ns_norm_scale", [](normuon_config_t* c) { c->ns_norm_scale = kInf; }},
  };
  for (const Case& k : cases) {
    normuon_config_t cfg;
    normuon_config_init(&cfg);
    k.set(&cfg);
    normuon_runtime_t rt = 0;
    EXPECT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT) << k.field;
    const std::string msg = LastError(0);
    EXPECT_TRUE(Contains(msg, k.field) || Contains(msg, k.alt)) << k.field << ": " << msg;
    EXPECT_EQ(rt, 0u);
  }
}

TEST(NonFiniteTest, NonFiniteGroupAndScheduleValuesAreRejectedAndChangeNothing) {
  SmallModel m;
  m.Build(/*finalize=*/false);
  struct Case {
    const char* field;
    void (*set)(normuon_group_desc_t*);
  };
  const Case cases[] = {
      {"lr", [](normuon_group_desc_t* g) { g->lr = kNaN; }},
      {"weight_decay", [](normuon_group_desc_t* g) { g->weight_decay = kInf; }},
      {"beta1", [](normuon_group_desc_t* g) { g->beta1 = kNaN; }},
      {"beta2", [](normuon_group_desc_t* g) { g->beta2 = kInf; }},
      {"eps", [](normuon_group_desc_t* g) { g->eps = kNaN; }},
      {"eps", [](normuon_group_desc_t* g) { g->eps = 0.0f; }},
  };
  for (const Case& k : cases) {
    for (normuon_group_kind_t kind : {NORMUON_GROUP_NORMUON, NORMUON_GROUP_ADAMW}) {
      normuon_group_desc_t g;
      normuon_group_desc_init(&g, kind);
      k.set(&g);
      normuon_group_t gid = -1;
      EXPECT_EQ(normuon_add_group(m.rt, &g, &gid), NORMUON_ERROR_INVALID_ARGUMENT) << k.field;
      EXPECT_TRUE(Contains(LastError(m.rt), k.field));
      EXPECT_EQ(gid, -1);
    }
  }
  // The failed adds left no group behind: the next one is group 2.
  normuon_group_desc_t g;
  normuon_group_desc_init(&g, NORMUON_GROUP_ADAMW);
  normuon_group_t gid = -1;
  ASSERT_EQ(normuon_add_group(m.rt, &g, &gid), NORMUON_SUCCESS) << LastError(m.rt);
  EXPECT_EQ(gid, 2);

  for (float bad : {kNaN, kInf, -kInf}) {
    EXPECT_EQ(normuon_set_group_lr(m.rt, 0, bad, 0.0f), NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(m.rt), "lr"));
    EXPECT_EQ(normuon_set_group_lr(m.rt, 1, 0.01f, bad), NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(m.rt), "weight_decay"));
  }
  EXPECT_EQ(normuon_set_group_lr(m.rt, 3, 0.01f, 0.0f), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "group"));
  EXPECT_EQ(normuon_set_group_lr(m.rt, -1, 0.01f, 0.0f), NORMUON_ERROR_INVALID_ARGUMENT);

  // A refused step writes no parameter and no state and counts nothing.
  ASSERT_EQ(normuon_finalize(m.rt), NORMUON_SUCCESS) << LastError(m.rt);
  ASSERT_EQ(normuon_step(m.rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(m.rt);
  const std::vector<float> w = m.w, b = m.b, momentum = m.Momentum();
  for (float bad : {kNaN, kInf, -kInf}) {
    EXPECT_EQ(normuon_step(m.rt, bad, 0.0f, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(m.rt), "lr"));
    EXPECT_EQ(normuon_step(m.rt, 0.01f, bad, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(m.rt), "weight_decay"));
  }
  EXPECT_EQ(0, std::memcmp(w.data(), m.w.data(), w.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(b.data(), m.b.data(), b.size() * sizeof(float)));
  const std::vector<float> momentum_after = m.Momentum();
  EXPECT_EQ(0, std::memcmp(momentum.data(), momentum_after.data(), momentum.size() * 4));
  normuon_step_info_t info;
  normuon_step_info_init(&info);
  ASSERT_EQ(normuon_step_result(m.rt, &info), NORMUON_SUCCESS);
  EXPECT_EQ(info.steps_taken, 1);
  EXPECT_EQ(info.steps_skipped, 0);
}

// 70000 x 70000 fp32 is 19.6 GB: registering it must not allocate it (nothing is allocated
// before finalize), and every byte count must be computed in 64 bits.
TEST(LargeShapeTest, ShapesBeyondFourGigabytesRegisterWithoutAllocating) {
  normuon_config_t cfg;
  normuon_config_init(&cfg);
  normuon_runtime_t rt = 0;
  ASSERT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_SUCCESS) << LastError(0);
  alignas(16) static float dummy[4];  // never dereferenced before finalize
  const uint64_t vm_before = VirtualBytes();
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  d.name = "huge";
  d.rows = 70000;
  d.cols = 70000;
  d.row_count = 70000;
  d.param = dummy;
  d.grad = dummy;
  d.group = NORMUON_GROUP_MATRIX_DEFAULT;
  normuon_param_t id = -1;
  ASSERT_EQ(normuon_register_matrix(rt, &d, &id), NORMUON_SUCCESS) << LastError(rt);
  normuon_param_desc_t a = d;
  a.name = "huge_adamw";
  a.group = NORMUON_GROUP_ADAMW_DEFAULT;
  ASSERT_EQ(normuon_register_adamw(rt, &a, &id), NORMUON_SUCCESS) << LastError(rt);
  // The largest accepted shape, 2^40 elements, twice.
  normuon_param_desc_t limit = d;
  limit.name = "limit";
  limit.rows = int64_t{1} << 20;
  limit.cols = int64_t{1} << 20;
  limit.row_count = limit.rows;
  ASSERT_EQ(normuon_register_matrix(rt, &limit, &id), NORMUON_SUCCESS) << LastError(rt);
  limit.name = "limit2";
  limit.rows = int64_t{1} << 40;
  limit.cols = 1;
  limit.row_count = limit.rows;
  ASSERT_EQ(normuon_register_matrix(rt, &limit, &id), NORMUON_SUCCESS) << LastError(rt);
  const uint64_t vm_after = VirtualBytes();
  if (vm_before != 0 && vm_after > vm_before) {
    EXPECT_LT(vm_after - vm_before, uint64_t{1} << 30) << "registration allocated memory";
  }
  uint64_t bytes = 0;
  ASSERT_EQ(normuon_memory_required(rt, &bytes), NORMUON_SUCCESS) << LastError(rt);
  // At least the fp32 momentum and Adam moments of everything: far beyond 32 bits, and no
  // 64-bit wrap-around either.
  const uint64_t huge = 70000ull * 70000ull;
  EXPECT_GE(bytes, 4 * huge + 8 * huge + 4 * (uint64_t{1} << 40) * 2);
  EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);
}

TEST(LargeShapeTest, ProductsThatOverflowAreRejectedNamingTheFields) {
  SmallModel m;
  m.Build(/*finalize=*/false);
  uint64_t before = 0;
  ASSERT_EQ(normuon_memory_required(m.rt, &before), NORMUON_SUCCESS);
  alignas(16) static float dummy[4];
  struct Case {
    int64_t rows, cols, row_begin, row_count;
    const char* field;
  };
  const Case cases[] = {
      {int64_t{1} << 62, 4, 0, 1, "desc.rows"},
      {3037000500, 3037000500, 0, 1, "desc.rows"},  // rows * cols > 2^63
      {kInt64Max, kInt64Max, 0, 1, "desc.rows"},
      {(int64_t{1} << 40) + 1, 1, 0, 1, "desc.rows"},
      {1, (int64_t{1} << 40) + 1, 0, 1, "desc.rows"},
      {kInt64Min, 4, 0, 0, "desc.rows"},
      {4, kInt64Min, 0, 0, "desc.cols"},
      {100, 4, 50, kInt64Max, "desc.row_count"},  // row_begin + row_count overflows
      {100, 4, kInt64Max, 1, "desc.row_begin"},
      {100, 4, kInt64Min, 1, "desc.row_begin"},
      {100, 4, 0, kInt64Min, "desc.row_count"},
      {100, 4, 100, 1, "desc.row_count"},
  };
  for (const Case& k : cases) {
    for (bool matrix : {true, false}) {
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = "bad";
      d.rows = k.rows;
      d.cols = k.cols;
      d.row_begin = k.row_begin;
      d.row_count = k.row_count;
      d.param = dummy;
      d.grad = dummy;
      d.group = matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
      normuon_param_t id = -1;
      const normuon_status_t s = matrix ? normuon_register_matrix(m.rt, &d, &id)
                                        : normuon_register_adamw(m.rt, &d, &id);
      EXPECT_EQ(s, NORMUON_ERROR_INVALID_ARGUMENT) << k.rows << " x " << k.cols;
      EXPECT_TRUE(Contains(LastError(m.rt), k.field)) << k.rows << " x " << k.cols;
      EXPECT_EQ(id, -1);
    }
  }
  uint64_t after = 0;
  ASSERT_EQ(normuon_memory_required(m.rt, &after), NORMUON_SUCCESS);
  EXPECT_EQ(before, after);
  ASSERT_EQ(normuon_finalize(m.rt), NORMUON_SUCCESS) << LastError(m.rt);
  EXPECT_EQ(normuon_step(m.rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(m.rt);
}

// A shape that is accepted but cannot be allocated fails at finalize with OUT_OF_MEMORY, on every
// attempt, and the runtime can still be destroyed cleanly (the sanitizer builds check for leaks).
TEST(LargeShapeTest, FinalizeBeyondMemoryFailsWithOutOfMemoryAndStaysDestroyable) {
  normuon_config_t cfg;
  normuon_config_init(&cfg);
  normuon_runtime_t rt = 0;
  ASSERT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_SUCCESS) << LastError(0);
  std::vector<float> w(64, 0.1f), g(64, 0.2f);
  normuon_param_desc_t small;
  normuon_param_desc_init(&small);
  small.name = "small";
  small.rows = 8;
  small.cols = 8;
  small.row_count = 8;
  small.param = w.data();
  small.grad = g.data();
  small.group = NORMUON_GROUP_MATRIX_DEFAULT;
  normuon_param_t id = -1;
  ASSERT_EQ(normuon_register_matrix(rt, &small, &id), NORMUON_SUCCESS) << LastError(rt);
  alignas(16) static float dummy[4];
  normuon_param_desc_t d = small;
  d.name = "four_terabytes";  // 2^40 fp32 elements: 4 TiB of momentum alone
  d.rows = int64_t{1} << 20;
  d.cols = int64_t{1} << 20;
  d.row_count = d.rows;
  d.param = dummy;
  d.grad = dummy;
  ASSERT_EQ(normuon_register_matrix(rt, &d, &id), NORMUON_SUCCESS) << LastError(rt);
  for (int attempt = 0; attempt < 2; ++attempt) {
    EXPECT_EQ(normuon_finalize(rt), NORMUON_ERROR_OUT_OF_MEMORY) << LastError(rt);
    EXPECT_TRUE(Contains(LastError(rt), "allocate")) << attempt;
    EXPECT_EQ(normuon_step(rt, 0.01f, 0.0f, nullptr), NORMUON_ERROR_INVALID_STATE);
  }
  EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);
}

TEST(NonFiniteTest, CustomCoefficientsMustExistAndBeFinite) {
  normuon_config_t cfg;
  normuon_config_init(&cfg);
  cfg.orthogonalizer = NORMUON_ORTHO_CUSTOM;
  cfg.ns_steps = 2;
  cfg.ns_coefficients = nullptr;
  normuon_runtime_t rt = 0;
  EXPECT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "config.ns_coefficients"));
  float coefficients[6] = {3.4445f, -4.7750f, 2.0315f, 3.4445f, -4.7750f, 2.0315f};
  cfg.ns_coefficients = coefficients;
  for (int i = 0; i < 6; ++i) {
    for (float bad : {kNaN, kInf}) {
      coefficients[i] = bad;
      EXPECT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT) << i;
      EXPECT_TRUE(Contains(LastError(0), "config.ns_coefficients[" + std::to_string(i) + "]"));
      coefficients[i] = 2.0315f;
    }
  }
  EXPECT_EQ(rt, 0u);
  // The coefficients are copied at create: the caller's array may change or go away after.
  ASSERT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_SUCCESS) << LastError(0);
  coefficients[0] = kNaN;
  std::vector<float> w(64, 0.1f), g(64);
  for (int i = 0; i < 64; ++i) g[i] = 0.01f * static_cast<float>(i % 7) - 0.03f;
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  d.name = "w";
  d.rows = 8;
  d.cols = 8;
  d.row_count = 8;
  d.param = w.data();
  d.grad = g.data();
  d.group = NORMUON_GROUP_MATRIX_DEFAULT;
  normuon_param_t id = -1;
  ASSERT_EQ(normuon_register_matrix(rt, &d, &id), NORMUON_SUCCESS) << LastError(rt);
  ASSERT_EQ(normuon_finalize(rt), NORMUON_SUCCESS) << LastError(rt);
  ASSERT_EQ(normuon_step(rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(rt);
  for (float v : w) EXPECT_TRUE(std::isfinite(v));
  EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);
}

TEST(IndexTest, BadParameterIndicesCountsAndSizesAreRejected) {
  SmallModel m;
  m.Build(/*finalize=*/true);
  const normuon_runtime_t rt = m.rt;
  for (normuon_param_t p : {-1, 2, 1 << 30, std::numeric_limits<int32_t>::min()}) {
    uint64_t bytes = 0;
    EXPECT_EQ(normuon_state_size(rt, p, NORMUON_STATE_MOMENTUM, &bytes),
              NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(rt), "param"));
    EXPECT_EQ(normuon_bind(rt, p, m.w.data(), m.gw.data()), NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(rt), "param"));
    EXPECT_EQ(normuon_grad_ready(rt, &p, 1, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  }
  EXPECT_EQ(normuon_grad_ready(rt, nullptr, -1, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "count"));
  std::vector<float> buf(64);
  for (uint64_t bytes : {0ull, 127ull, 129ull, 0xffffffffffffffffull}) {
    EXPECT_EQ(normuon_get_state(rt, m.w_id, NORMUON_STATE_MOMENTUM, buf.data(), bytes),
              NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(rt), "bytes"));
    EXPECT_EQ(normuon_set_state(rt, m.w_id, NORMUON_STATE_MOMENTUM, buf.data(), bytes),
              NORMUON_ERROR_INVALID_ARGUMENT);
  }
  const int64_t negative = -5;
  EXPECT_EQ(normuon_set_state(rt, m.b_id, NORMUON_STATE_STEP, &negative, 8),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "step"));
  // Misaligned buffers are refused at bind.
  EXPECT_EQ(normuon_bind(rt, m.w_id, reinterpret_cast<char*>(m.w.data()) + 2, m.gw.data()),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(rt), "aligned"));
  EXPECT_EQ(normuon_step(rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(rt);
}

}  // namespace
}  // namespace normuon_reliability
