// The C edge of the runtime (normuon/normuon.h): the runtime handles (base/handle_registry.h),
// the versioned copy of every public struct (base/versioned_struct.h), status conversion
// (base/c_status.h) and per-handle error messages. Nothing thrown inside the library crosses
// this boundary.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/c_status.h"
#include "base/handle_registry.h"
#include "base/versioned_struct.h"
#include "capi/comm_handles.h"
#include "capi/guarded.h"
#include "capi/struct_layouts.h"
#include "normuon/normuon.h"
#include "runtime/runtime.h"

namespace normuon {
namespace {

// One live runtime: calls on it are serialized by `mu`; `error` is its last failure message.
struct RuntimeHandle {
  std::mutex mu;
  std::unique_ptr<Runtime> runtime;  // null once destroyed
  std::string error;
};

// Runtime handles carry the tag 0xA0 (communicators: 0xC0), so neither kind is mistaken for the
// other.
constexpr uint8_t kRuntimeTag = 0xA0;

HandleRegistry<RuntimeHandle>& Runtimes() {
  static auto* r = new HandleRegistry<RuntimeHandle>(kRuntimeTag, "runtime");  // used at exit
  return *r;
}

// The message of failures that have no live handle to live on (create, bad handles).
thread_local std::string g_thread_error;

normuon_status_t Fail(std::string* where, const absl::Status& s) {
  *where = std::string(s.message());
  return StatusToC(s);
}

// Runs fn(runtime) with the handle's lock held; records the failure message on the handle.
template <typename Fn>
normuon_status_t WithRuntime(normuon_runtime_t rt, Fn fn) {
  std::shared_ptr<RuntimeHandle> e;
  absl::Status s = Guarded([&]() -> absl::Status {
    absl::StatusOr<std::shared_ptr<RuntimeHandle>> found = Runtimes().Find(rt);
    if (!found.ok()) return found.status();
    e = *std::move(found);
    return absl::OkStatus();
  });
  if (!s.ok()) return Fail(&g_thread_error, s);
  std::lock_guard<std::mutex> lock(e->mu);
  if (e->runtime == nullptr) {  // destroyed while this call waited for the lock
    return Fail(&g_thread_error,
                absl::NotFoundError(absl::StrCat(
                    "runtime handle ", HandleRegistry<RuntimeHandle>::Describe(rt),
                    " is not a live runtime (destroyed while this call waited for it)")));
  }
  s = Guarded([&]() -> absl::Status { return fn(*e->runtime); });
  if (s.ok()) return NORMUON_SUCCESS;
  return Fail(&e->error, s);
}

}  // namespace
}  // namespace normuon

using normuon::Runtime;

extern "C" {

const char* normuon_status_string(normuon_status_t status) { return normuon::StatusName(status); }

int normuon_version(void) {
  return NORMUON_VERSION_MAJOR * 10000 + NORMUON_VERSION_MINOR * 100 + NORMUON_VERSION_PATCH;
}

normuon_status_t normuon_create(const normuon_config_t* config, normuon_comm_t comm,
                                normuon_runtime_t* out) {
  normuon_runtime_t handle = 0;
  const absl::Status s = normuon::Guarded([&]() -> absl::Status {
    normuon_config_t defaults;
    normuon_config_init(&defaults);
    absl::StatusOr<normuon_config_t> c =
        normuon::CopyStructIn(config, normuon::kConfigLayout, defaults);
    if (!c.ok()) return c.status();
    if (out == nullptr) return absl::InvalidArgumentError("out is NULL");
    absl::StatusOr<std::shared_ptr<normuon::Communicator>> communicator =
        normuon::LookupComm(comm);
    if (!communicator.ok()) {
      return absl::Status(communicator.status().code(),
                          absl::StrCat("comm: ", communicator.status().message()));
    }
    absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(*c, *std::move(communicator));
    if (!rt.ok()) return rt.status();
    auto e = std::make_shared<normuon::RuntimeHandle>();
    e->runtime = *std::move(rt);
    absl::StatusOr<normuon_runtime_t> added = normuon::Runtimes().Add(std::move(e));
    if (!added.ok()) return added.status();
    handle = *added;
    return absl::OkStatus();
  });
  if (!s.ok()) return normuon::Fail(&normuon::g_thread_error, s);
  *out = handle;
  return NORMUON_SUCCESS;
}

normuon_status_t normuon_destroy(normuon_runtime_t rt) {
  std::shared_ptr<normuon::RuntimeHandle> e;
  const absl::Status s = normuon::Guarded([&]() -> absl::Status {
    absl::StatusOr<std::shared_ptr<normuon::RuntimeHandle>> removed =
        normuon::Runtimes().Remove(rt);
    if (!removed.ok()) return removed.status();
    e = *std::move(removed);
    return absl::OkStatus();
  });
  if (!s.ok()) return normuon::Fail(&normuon::g_thread_error, s);
  std::lock_guard<std::mutex> lock(e->mu);  // waits for a call in flight on another thread
  e->runtime.reset();
  return NORMUON_SUCCESS;
}

const char* normuon_last_error(normuon_runtime_t rt) {
  try {
    absl::StatusOr<std::shared_ptr<normuon::RuntimeHandle>> e = normuon::Runtimes().Find(rt);
    if (!e.ok()) return normuon::g_thread_error.c_str();
    // The string lives on the handle until the next call on it, as documented.
    return (*e)->error.c_str();
  } catch (...) {
    return "internal error while reading the last error";
  }
}

normuon_status_t normuon_add_group(normuon_runtime_t rt, const normuon_group_desc_t* desc,
                                   normuon_group_t* out) {
  return normuon::WithRuntime(rt, [&](Runtime& r) -> absl::Status {
    // The group descriptor has one version so far: no field is ever left to the defaults.
    normuon_group_desc_t defaults;
    normuon_group_desc_init(&defaults, NORMUON_GROUP_NORMUON);
    absl::StatusOr<normuon_group_desc_t> d =
        normuon::CopyStructIn(desc, normuon::kGroupDescLayout, defaults);
    if (!d.ok()) return d.status();
    if (out == nullptr) return absl::InvalidArgumentError("out is NULL");
    absl::StatusOr<int32_t> g = r.AddGroup(*d);
    if (!g.ok()) return g.status();
    *out = *g;
    return absl::OkStatus();
  });
}

normuon_status_t normuon_set_group_lr(normuon_runtime_t rt, normuon_group_t group, float lr,
                                      float weight_decay) {
  return normuon::WithRuntime(
      rt, [&](Runtime& r) { return r.SetGroupLr(group, lr, weight_decay); });
}

static normuon_status_t RegisterParam(normuon_runtime_t rt, const normuon_param_desc_t* desc,
                                      normuon_param_t* out, bool matrix) {
  return normuon::WithRuntime(rt, [&](Runtime& r) -> absl::Status {
    normuon_param_desc_t defaults;
    normuon_param_desc_init(&defaults);
    absl::StatusOr<normuon_param_desc_t> d =
        normuon::CopyStructIn(desc, normuon::kParamDescLayout, defaults);
    if (!d.ok()) return d.status();
    if (out == nullptr) return absl::InvalidArgumentError("out is NULL");
    // group -1 (normuon_param_desc_init's default): the default group of the parameter's kind.
    if (d->group == -1) {
      d->group = matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
    }
    absl::StatusOr<int32_t> id = matrix ? r.RegisterMatrix(*d) : r.RegisterAdamW(*d);
    if (!id.ok()) return id.status();
    *out = *id;
    return absl::OkStatus();
  });
}

normuon_status_t normuon_register_matrix(normuon_runtime_t rt, const normuon_param_desc_t* desc,
                                         normuon_param_t* out) {
  return RegisterParam(rt, desc, out, /*matrix=*/true);
}

normuon_status_t normuon_register_adamw(normuon_runtime_t rt, const normuon_param_desc_t* desc,
                                        normuon_param_t* out) {
  return RegisterParam(rt, desc, out, /*matrix=*/false);
}

normuon_status_t normuon_finalize(normuon_runtime_t rt) {
  return normuon::WithRuntime(rt, [&](Runtime& r) { return r.Finalize(); });
}

normuon_status_t normuon_memory_required(normuon_runtime_t rt, uint64_t* bytes) {
  return normuon::WithRuntime(rt, [&](Runtime& r) -> absl::Status {
    if (bytes == nullptr) return absl::InvalidArgumentError("bytes is null");
    *bytes = r.MemoryRequired();
    return absl::OkStatus();
  });
}

normuon_status_t normuon_bind(normuon_runtime_t rt, normuon_param_t param, void* param_ptr,
                              const void* grad_ptr) {
  return normuon::WithRuntime(rt, [&](Runtime& r) { return r.Bind(param, param_ptr, grad_ptr); });
}

normuon_status_t normuon_bind_piece(normuon_runtime_t rt, normuon_param_t param, int32_t piece,
                                    void* param_ptr, const void* grad_ptr) {
  return normuon::WithRuntime(
      rt, [&](Runtime& r) { return r.BindPiece(param, piece, param_ptr, grad_ptr); });
}

normuon_status_t normuon_grad_ready(normuon_runtime_t rt, const normuon_param_t* params,
                                    int32_t count, void* stream) {
  return normuon::WithRuntime(rt,
                              [&](Runtime& r) { return r.GradReady(params, count, stream); });
}

normuon_status_t normuon_step(normuon_runtime_t rt, float lr, float weight_decay, void* stream) {
  return normuon::WithRuntime(rt, [&](Runtime& r) { return r.Step(lr, weight_decay, stream); });
}

normuon_status_t normuon_step_cancel(normuon_runtime_t rt) {
  return normuon::WithRuntime(rt, [&](Runtime& r) { return r.StepCancel(); });
}

normuon_status_t normuon_step_result(normuon_runtime_t rt, normuon_step_info_t* info) {
  return normuon::WithRuntime(rt, [&](Runtime& r) -> absl::Status {
    absl::Status s = normuon::CheckStructOut(info, normuon::kStepInfoLayout);
    if (!s.ok()) return s;
    normuon_step_info_t full;
    normuon_step_info_init(&full);
    s = r.StepResult(&full);
    if (!s.ok()) return s;
    normuon::CopyStructOut(&full, normuon::kStepInfoLayout, info);
    return absl::OkStatus();
  });
}

normuon_status_t normuon_last_step_profile(normuon_runtime_t rt, normuon_step_profile_t* profile) {
  return normuon::WithRuntime(rt, [&](Runtime& r) -> absl::Status {
    absl::Status s = normuon::CheckStructOut(profile, normuon::kStepProfileLayout);
    if (!s.ok()) return s;
    normuon_step_profile_t full;
    normuon_step_profile_init(&full);
    s = r.LastStepProfile(&full);
    if (!s.ok()) return s;
    normuon::CopyStructOut(&full, normuon::kStepProfileLayout, profile);
    return absl::OkStatus();
  });
}

normuon_status_t normuon_last_step_trace(normuon_runtime_t rt, char* buf, uint64_t capacity,
                                         uint64_t* needed) {
  return normuon::WithRuntime(rt, [&](Runtime& r) -> absl::Status {
    if (needed == nullptr) return absl::InvalidArgumentError("needed is null");
    if (capacity > 0 && buf == nullptr) return absl::InvalidArgumentError("buf is null");
    auto trace = r.LastStepTrace();
    if (!trace.ok()) return trace.status();
    *needed = trace->size() + 1;
    if (capacity > 0) {
      const size_t n = std::min<uint64_t>(capacity - 1, trace->size());
      std::memcpy(buf, trace->data(), n);
      buf[n] = '\0';
    }
    return absl::OkStatus();
  });
}

normuon_status_t normuon_state_size(normuon_runtime_t rt, normuon_param_t param,
                                    normuon_state_kind_t kind, uint64_t* bytes) {
  return normuon::WithRuntime(rt, [&](Runtime& r) -> absl::Status {
    if (bytes == nullptr) return absl::InvalidArgumentError("bytes is null");
    auto size = r.StateSize(param, kind);
    if (!size.ok()) return size.status();
    *bytes = *size;
    return absl::OkStatus();
  });
}

normuon_status_t normuon_param_state_size(const normuon_config_t* config,
                                          const normuon_param_desc_t* desc, int32_t is_matrix,
                                          normuon_state_kind_t kind, uint64_t* bytes) {
  const absl::Status s = normuon::Guarded([&]() -> absl::Status {
    normuon_config_t config_defaults;
    normuon_config_init(&config_defaults);
    absl::StatusOr<normuon_config_t> c =
        normuon::CopyStructIn(config, normuon::kConfigLayout, config_defaults);
    if (!c.ok()) return c.status();
    normuon_param_desc_t desc_defaults;
    normuon_param_desc_init(&desc_defaults);
    absl::StatusOr<normuon_param_desc_t> d =
        normuon::CopyStructIn(desc, normuon::kParamDescLayout, desc_defaults);
    if (!d.ok()) return d.status();
    if (is_matrix != 0 && is_matrix != 1) {
      return absl::InvalidArgumentError(absl::StrCat("is_matrix = ", is_matrix, " must be 0 or 1"));
    }
    if (bytes == nullptr) return absl::InvalidArgumentError("bytes is null");
    if (c->variant < NORMUON_VARIANT_NORMUON || c->variant > NORMUON_VARIANT_ADAMUON) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.variant = ", static_cast<int>(c->variant), " is unknown"));
    }
    if (c->neuron_axis != NORMUON_NEURON_ROWS && c->neuron_axis != NORMUON_NEURON_COLUMNS) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.neuron_axis = ", static_cast<int>(c->neuron_axis), " is unknown"));
    }
    const normuon::ParamKind kind_of =
        is_matrix ? normuon::ParamKind::kMatrix : normuon::ParamKind::kAdamW;
    if (d->group == -1) d->group = is_matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
    absl::StatusOr<normuon::ParamSpec> spec = normuon::ValidateParamDesc(
        kind_of, *d, {NORMUON_GROUP_NORMUON, NORMUON_GROUP_ADAMW});
    if (!spec.ok()) return spec.status();
    absl::StatusOr<uint64_t> size =
        normuon::StateBytesLocal(kind_of, c->variant, c->neuron_axis, spec->cols,
                                 static_cast<int64_t>(spec->splits.size()),
                                 normuon::LocalRows(*spec), normuon::LocalElements(*spec), kind);
    if (!size.ok()) return size.status();
    *bytes = *size;
    return absl::OkStatus();
  });
  return s.ok() ? NORMUON_SUCCESS : normuon::Fail(&normuon::g_thread_error, s);
}

normuon_status_t normuon_get_state(normuon_runtime_t rt, normuon_param_t param,
                                   normuon_state_kind_t kind, void* dst, uint64_t bytes) {
  return normuon::WithRuntime(rt,
                              [&](Runtime& r) { return r.GetState(param, kind, dst, bytes); });
}

normuon_status_t normuon_set_state(normuon_runtime_t rt, normuon_param_t param,
                                   normuon_state_kind_t kind, const void* src, uint64_t bytes) {
  return normuon::WithRuntime(rt,
                              [&](Runtime& r) { return r.SetState(param, kind, src, bytes); });
}

normuon_status_t normuon_save_checkpoint(normuon_runtime_t rt, const char* dir) {
  return normuon::WithRuntime(rt, [&](Runtime& r) -> absl::Status {
    if (dir == nullptr || dir[0] == '\0') return absl::InvalidArgumentError("dir is null or empty");
    return r.SaveCheckpoint(dir);
  });
}

normuon_status_t normuon_load_checkpoint(normuon_runtime_t rt, const char* dir) {
  return normuon::WithRuntime(rt, [&](Runtime& r) -> absl::Status {
    if (dir == nullptr || dir[0] == '\0') return absl::InvalidArgumentError("dir is null or empty");
    return r.LoadCheckpoint(dir);
  });
}

}  // extern "C"

extern "C" int normuon_has_cuda(void) {
#ifdef NORMUON_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}
