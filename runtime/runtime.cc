#include "runtime/runtime.h"

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <map>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "sharding/buckets.h"
#include "sharding/owner_assignment.h"
#include "sharding/pipeline_order.h"
#include "sharding/registration.h"
#include "sharding/shard.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace normuon {
namespace {

constexpr std::array<float, 3> kQuintic = {3.4445f, -4.7750f, 2.0315f};
// Polar Express, as Dion's polar_express.py: one triple per iteration.
constexpr std::array<std::array<float, 3>, 5> kPolarExpress = {{
    {8.156554524902461f, -22.48329292557795f, 15.878769915207462f},
    {4.042929935166739f, -2.808917465908714f, 0.5000178451051316f},
    {3.8916678022926607f, -2.772484153217685f, 0.5060648178503393f},
    {3.285753657755655f, -2.3681294933425376f, 0.46449024233003106f},
    {2.3465413258596377f, -1.7097828382687081f, 0.42323551169305323f},
}};

// The update's shape factor (normuon.h, normuon_lr_adjust_t).
double ShapeFactor(normuon_variant_t variant, normuon_lr_adjust_t adjust, int64_t rows,
                   int64_t cols) {
  const double m = static_cast<double>(rows), n = static_cast<double>(cols);
  const double spectral = std::sqrt(std::max(1.0, m / n));
  const double rms = 0.2 * std::sqrt(std::max(m, n));
  switch (adjust) {
    case NORMUON_LR_ADJUST_NONE:
      return 1.0;
    case NORMUON_LR_ADJUST_SPECTRAL:
      return spectral;
    case NORMUON_LR_ADJUST_RMS:
      return rms;
    case NORMUON_LR_ADJUST_DEFAULT:
    case NORMUON_LR_ADJUST_MIN_ENUM:
    case NORMUON_LR_ADJUST_MAX_ENUM:  // rejected at create
      break;
  }
  switch (variant) {
    case NORMUON_VARIANT_NORMUON_PAPER:
      return 0.2 * std::sqrt(m * n);
    case NORMUON_VARIANT_ADAMUON:
      return rms;
    default:
      return spectral;
  }
}
// Largest element count accepted for one parameter: keeps every byte count (elements * 4, and
// the sums over parameters) far from int64 overflow.
constexpr int64_t kMaxElements = int64_t{1} << 40;

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

// normuon_config_t's fields are 4 bytes, but bucket_bytes and ns_coefficients (8, 8-aligned).
bool ConfigSizeEndsInsideAField(size_t n) {
  if (n >= sizeof(normuon_config_t)) return false;
  if (n % 4 != 0) return true;
  for (size_t at : {offsetof(normuon_config_t, bucket_bytes),
                    offsetof(normuon_config_t, ns_coefficients)}) {
    if (n > at && n < at + 8) return true;
  }
  return false;
}

// A failure in graph mode (config.cuda_graph), saying what was being done. The CUDA backend
// reports a failed CUDA call as Internal; here it becomes NORMUON_ERROR_CUDA (Unknown).
absl::Status CudaGraphError(const absl::Status& s, absl::string_view doing) {
  if (s.ok()) return s;
  const absl::StatusCode code =
      s.code() == absl::StatusCode::kInternal ? absl::StatusCode::kUnknown : s.code();
  return absl::Status(code, absl::StrCat("config.cuda_graph = 1: ", doing, ": ", s.message()));
}

// p advanced by `rows` rows of `cols` elements of dtype d; null stays null.
template <typename T>
T* OffsetRows(T* p, int64_t rows, int64_t cols, DType d) {
  if (p == nullptr) return nullptr;
  using Byte = std::conditional_t<std::is_const_v<T>, const char, char>;
  return reinterpret_cast<Byte*>(p) + rows * cols * static_cast<int64_t>(SizeOf(d));
}

// Adds the lifetime of the object to *ms and logs it as a span (a stage's time; each stage is
// timed on one thread, into that thread's log).
class StageTimer {
 public:
  StageTimer(double* ms, SpanLog* log, int32_t phase, int32_t bucket)
      : ms_(ms), log_(log), phase_(phase), bucket_(bucket),
        start_(std::chrono::steady_clock::now()) {}
  ~StageTimer() {
    const auto end = std::chrono::steady_clock::now();
    *ms_ += std::chrono::duration<double, std::milli>(end - start_).count();
    log_->Add(phase_, bucket_, start_, end);
  }

 private:
  double* ms_;
  SpanLog* log_;
  int32_t phase_, bucket_;
  std::chrono::steady_clock::time_point start_;
};


bool ValidDType(normuon_dtype_t d) { return d == NORMUON_DTYPE_FP32 || d == NORMUON_DTYPE_BF16; }

bool FiniteNonNegative(float x) { return std::isfinite(x) && x >= 0.0f; }

// Checks one hyper-parameter group; `where` names it in messages.
absl::Status ValidateGroup(const normuon_group_desc_t& g, absl::string_view where) {
  if (g.kind != NORMUON_GROUP_NORMUON && g.kind != NORMUON_GROUP_ADAMW) {
    return Invalid(absl::StrCat(where, ".kind = ", static_cast<int>(g.kind),
                                " is not NORMUON_GROUP_NORMUON or NORMUON_GROUP_ADAMW"));
  }
  if (!FiniteNonNegative(g.lr)) return Invalid(absl::StrCat(where, ".lr = ", g.lr, " must be finite and >= 0"));
  if (!FiniteNonNegative(g.weight_decay)) {
    return Invalid(absl::StrCat(where, ".weight_decay = ", g.weight_decay, " must be finite and >= 0"));
  }
  if (!(g.beta1 >= 0.0f && g.beta1 < 1.0f)) {
    return Invalid(absl::StrCat(where, ".beta1 = ", g.beta1, " must be in [0, 1)"));
  }
  if (!(g.beta2 >= 0.0f && g.beta2 < 1.0f)) {
    return Invalid(absl::StrCat(where, ".beta2 = ", g.beta2, " must be in [0, 1)"));
  }
  if (!(g.eps > 0.0f && std::isfinite(g.eps))) {
    return Invalid(absl::StrCat(where, ".eps = ", g.eps, " must be finite and > 0"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(const normuon_config_t& in,
                                                         std::shared_ptr<Communicator> comm,
                                                         std::unique_ptr<Backend> backend) {
  if (in.struct_size < sizeof(uint32_t) * 2) {
    return Invalid(absl::StrCat("config.struct_size = ", in.struct_size,
                                ": fill the config with normuon_config_init"));
  }
  // Accept an older, shorter struct: missing trailing fields keep their defaults. It must end on
  // a field boundary: a size inside a field would copy part of it (a pointer's low bytes).
  if (ConfigSizeEndsInsideAField(in.struct_size)) {
    return Invalid(absl::StrCat("config.struct_size = ", in.struct_size,
                                " ends inside a field of normuon_config_t (", sizeof(normuon_config_t),
                                " bytes): fill the config with normuon_config_init"));
  }
  normuon_config_t c;
  normuon_config_init(&c);
  std::memcpy(&c, &in, std::min<size_t>(in.struct_size, sizeof(c)));
  c.struct_size = sizeof(c);
  if (c.api_version == 0 || c.api_version > NORMUON_API_VERSION) {
    return Invalid(absl::StrCat("config.api_version = ", c.api_version, ", this library has ",
                                NORMUON_API_VERSION));
  }
  if (c.backend != NORMUON_BACKEND_CPU && c.backend != NORMUON_BACKEND_CUDA) {
    return Invalid(absl::StrCat("config.backend = ", static_cast<int>(c.backend),
                                " is not NORMUON_BACKEND_CPU or NORMUON_BACKEND_CUDA"));
  }
  if (c.variant != NORMUON_VARIANT_NORMUON && c.variant != NORMUON_VARIANT_NORMUON_PAPER &&
      c.variant != NORMUON_VARIANT_MUON && c.variant != NORMUON_VARIANT_ADAMUON) {
    return Invalid(absl::StrCat("config.variant = ", static_cast<int>(c.variant), " is unknown"));
  }
  if (c.ns_dtype != NORMUON_NS_DEFAULT && c.ns_dtype != NORMUON_NS_FP32 &&
      c.ns_dtype != NORMUON_NS_BF16) {
    return Invalid(absl::StrCat("config.ns_dtype = ", static_cast<int>(c.ns_dtype), " is unknown"));
  }
  if (c.ns_steps < 1 || c.ns_steps > 100) {
    return Invalid(absl::StrCat("config.ns_steps = ", c.ns_steps, " must be in [1, 100]"));
  }
  if (c.nesterov != 0 && c.nesterov != 1) {
    return Invalid(absl::StrCat("config.nesterov = ", c.nesterov, " must be 0 or 1"));
  }
  if (c.check_finite != 0 && c.check_finite != 1) {
    return Invalid(absl::StrCat("config.check_finite = ", c.check_finite, " must be 0 or 1"));
  }
  if (c.schedule != NORMUON_SCHEDULE_SEQUENTIAL && c.schedule != NORMUON_SCHEDULE_PER_MATRIX &&
      c.schedule != NORMUON_SCHEDULE_BUCKETED) {
    return Invalid(absl::StrCat("config.schedule = ", static_cast<int>(c.schedule), " is unknown"));
  }
  if (c.schedule == NORMUON_SCHEDULE_BUCKETED && c.bucket_bytes == 0) {
    return Invalid("config.bucket_bytes = 0: the bucketed schedule needs buckets of >= 1 byte");
  }
  if (c.owner_policy != NORMUON_OWNER_ROUND_ROBIN && c.owner_policy != NORMUON_OWNER_COST_BALANCED) {
    return Invalid(absl::StrCat("config.owner_policy = ", static_cast<int>(c.owner_policy),
                                " is unknown"));
  }
  if (c.cuda_graph != 0 && c.cuda_graph != 1) {
    return Invalid(absl::StrCat("config.cuda_graph = ", c.cuda_graph, " must be 0 or 1"));
  }
  if (c.cuda_graph == 1 && c.backend != NORMUON_BACKEND_CUDA) {
    return Invalid("config.cuda_graph = 1 needs config.backend = NORMUON_BACKEND_CUDA (a CUDA "
                   "graph replays device work; the CPU backend runs each call to completion)");
  }
  if (comm == nullptr) return Invalid("comm is null");
  if (c.cuda_graph == 1 && comm->world_size() > 1) {
    return absl::UnimplementedError(absl::StrCat(
        "config.cuda_graph = 1 at world size ", comm->world_size(), " (", comm->Describe(),
        "): graph mode runs single-rank steps only in this version (the in-process device group "
        "synchronizes the host in each collective, which a stream capture cannot hold; capturing "
        "NCCL collectives is left for later)"));
  }
  // The step's buffers are backend memory, and the communicator moves them as they are.
  if (comm->UsesDeviceMemory() && c.backend != NORMUON_BACKEND_CUDA) {
    return Invalid(absl::StrCat(
        "comm: ", comm->Describe(), " moves device memory, but config.backend is CPU; use "
        "NORMUON_BACKEND_CUDA, or a host communicator (normuon_comm_create_inprocess_group)"));
  }
  if (!comm->UsesDeviceMemory() && comm->world_size() > 1 && c.backend == NORMUON_BACKEND_CUDA) {
    return Invalid(absl::StrCat(
        "comm: ", comm->Describe(), " moves host memory, but config.backend is CUDA at world "
        "size ", comm->world_size(), "; the CUDA sharded step needs a device communicator "
        "(normuon_comm_create_nccl, or normuon_comm_create_inprocess_group_ex with "
        "NORMUON_COMM_MEMORY_DEVICE)"));
  }
  if (!(c.ns_eps >= 0.0f && std::isfinite(c.ns_eps))) {
    return Invalid(absl::StrCat("config.ns_eps = ", c.ns_eps,
                                " must be finite and >= 0 (0: the orthogonalizer's own)"));
  }
  if (!(c.ns_norm_scale >= 0.0f && std::isfinite(c.ns_norm_scale))) {
    return Invalid(absl::StrCat("config.ns_norm_scale = ", c.ns_norm_scale,
                                " must be finite and >= 0 (0: the orthogonalizer's own)"));
  }
  if (c.lr_adjust < NORMUON_LR_ADJUST_DEFAULT || c.lr_adjust > NORMUON_LR_ADJUST_RMS) {
    return Invalid(absl::StrCat("config.lr_adjust = ", static_cast<int>(c.lr_adjust),
                                " is unknown"));
  }
  if (c.orthogonalizer < NORMUON_ORTHO_QUINTIC || c.orthogonalizer > NORMUON_ORTHO_CUSTOM) {
    return Invalid(absl::StrCat("config.orthogonalizer = ", static_cast<int>(c.orthogonalizer),
                                " is unknown"));
  }
  if (c.orthogonalizer == NORMUON_ORTHO_CUSTOM) {
    if (c.ns_coefficients == nullptr) {
      return Invalid("config.ns_coefficients is null but config.orthogonalizer is CUSTOM");
    }
    for (int i = 0; i < 3 * c.ns_steps; ++i) {
      if (!std::isfinite(c.ns_coefficients[i])) {
        return Invalid(absl::StrCat("config.ns_coefficients[", i, "] = ", c.ns_coefficients[i],
                                    " is not finite"));
      }
    }
  }
  if (c.neuron_axis != NORMUON_NEURON_ROWS && c.neuron_axis != NORMUON_NEURON_COLUMNS) {
    return Invalid(absl::StrCat("config.neuron_axis = ", static_cast<int>(c.neuron_axis),
                                " is unknown"));
  }
  if (c.neuron_axis == NORMUON_NEURON_COLUMNS && c.variant != NORMUON_VARIANT_NORMUON &&
      c.variant != NORMUON_VARIANT_NORMUON_PAPER) {
    return Invalid(absl::StrCat("config.neuron_axis = COLUMNS needs a NorMuon variant (variant ",
                                static_cast<int>(c.variant),
                                " keeps no per-neuron second moment)"));
  }
  if (c.cautious_weight_decay != 0 && c.cautious_weight_decay != 1) {
    return Invalid(absl::StrCat("config.cautious_weight_decay = ", c.cautious_weight_decay,
                                " must be 0 or 1"));
  }
  normuon_group_desc_t matrix_group, adamw_group;
  normuon_group_desc_init(&matrix_group, NORMUON_GROUP_NORMUON);
  matrix_group.lr = c.lr;
  matrix_group.weight_decay = c.weight_decay;
  matrix_group.beta1 = c.momentum;
  matrix_group.beta2 = c.beta2;
  matrix_group.eps = c.eps;
  NORMUON_RETURN_IF_ERROR(ValidateGroup(matrix_group, "config (NorMuon group)"));
  normuon_group_desc_init(&adamw_group, NORMUON_GROUP_ADAMW);
  adamw_group.lr = c.adamw_lr;
  adamw_group.weight_decay = c.adamw_weight_decay;
  adamw_group.beta1 = c.adamw_beta1;
  adamw_group.beta2 = c.adamw_beta2;
  adamw_group.eps = c.adamw_eps;
  NORMUON_RETURN_IF_ERROR(ValidateGroup(adamw_group, "config (AdamW group: adamw_*)"));

  if (backend != nullptr) {
    // A stand-in given by a test.
  } else if (c.backend == NORMUON_BACKEND_CPU) {
    backend = MakeCpuBackend();
  } else {
    if (c.device < 0) return Invalid(absl::StrCat("config.device = ", c.device, " must be >= 0"));
    NORMUON_ASSIGN_OR_RETURN(backend, MakeCudaBackend(c.device));
  }
  std::unique_ptr<Runtime> rt(new Runtime(c, std::move(backend), std::move(comm)));
  rt->groups_.push_back(Group{matrix_group});
  rt->groups_.push_back(Group{adamw_group});
  return rt;
}

Runtime::Runtime(const normuon_config_t& config, std::unique_ptr<Backend> backend,
                 std::shared_ptr<Communicator> comm)
    : config_(config),
      backend_(std::move(backend)),
      comm_(std::move(comm)),
      rank_(comm_->rank()),
      world_(comm_->world_size()) {
  if (config_.ns_dtype == NORMUON_NS_DEFAULT) {
    ns_dtype_ = config_.backend == NORMUON_BACKEND_CUDA ? DType::kBF16 : DType::kF32;
  } else {
    ns_dtype_ = config_.ns_dtype == NORMUON_NS_BF16 ? DType::kBF16 : DType::kF32;
  }
  const bool polar = config_.orthogonalizer == NORMUON_ORTHO_POLAR_EXPRESS;
  for (int i = 0; i < config_.ns_steps; ++i) {
    if (config_.orthogonalizer == NORMUON_ORTHO_CUSTOM) {
      const float* abc = config_.ns_coefficients + 3 * i;
      coefficients_.push_back({abc[0], abc[1], abc[2]});
    } else if (polar) {
      coefficients_.push_back(kPolarExpress[std::min<size_t>(i, kPolarExpress.size() - 1)]);
    } else {
      coefficients_.push_back(kQuintic);
    }
  }
  config_.ns_coefficients = nullptr;  // copied above; the caller's array may go away
  if (config_.ns_eps == 0.0f) config_.ns_eps = polar ? 1e-6f : 1e-7f;
  if (config_.ns_norm_scale == 0.0f) config_.ns_norm_scale = polar ? 1.02f : 1.0f;
}

Runtime::~Runtime() {
  // The pipeline's workers may be inside a stage (a step begun by grad_ready and never taken):
  // stop and join them before anything they touch is freed.
  pipeline_.reset();
  if (backend_ == nullptr) return;
  if (stepped_) backend_->WaitStep().IgnoreError();
  for (void* p : allocations_) backend_->Free(p);
}

absl::StatusOr<int32_t> Runtime::AddGroup(const normuon_group_desc_t& desc) {
  if (finalized_) return absl::FailedPreconditionError("add_group after finalize");
  if (desc.struct_size < sizeof(normuon_group_desc_t)) {
    return Invalid(absl::StrCat("group.struct_size = ", desc.struct_size,
                                ": fill it with normuon_group_desc_init"));
  }
  NORMUON_RETURN_IF_ERROR(ValidateGroup(desc, "group"));
  groups_.push_back(Group{desc});
  return static_cast<int32_t>(groups_.size() - 1);
}

absl::Status Runtime::SetGroupLr(int32_t group, float lr, float weight_decay) {
  if (group < 0 || group >= static_cast<int32_t>(groups_.size())) {
    return Invalid(absl::StrCat("group = ", group, " is not a group (", groups_.size(), " exist)"));
  }
  if (!FiniteNonNegative(lr)) return Invalid(absl::StrCat("lr = ", lr, " must be finite and >= 0"));
  if (!FiniteNonNegative(weight_decay)) {
    return Invalid(absl::StrCat("weight_decay = ", weight_decay, " must be finite and >= 0"));
  }
  groups_[group].desc.lr = lr;
  groups_[group].desc.weight_decay = weight_decay;
  return absl::OkStatus();
}

absl::Status Runtime::ValidatePointers(const Param& p, void* param_ptr, const void* grad_ptr) {
  const std::string who = absl::StrCat("parameter '", p.name, "'");
  if (p.row_count == 0) return absl::OkStatus();  // no rows here: pointers are not used
  if (param_ptr == nullptr) {
    return Invalid(absl::StrCat(who, ": param is null but this rank holds ", p.row_count, " rows"));
  }
  const size_t pa = SizeOf(p.param_dtype), ga = SizeOf(p.grad_dtype);
  if (reinterpret_cast<uintptr_t>(param_ptr) % pa != 0) {
    return Invalid(absl::StrCat(who, ": param pointer ", reinterpret_cast<uintptr_t>(param_ptr),
                                " is not aligned to ", pa, " bytes"));
  }
  if (grad_ptr != nullptr && reinterpret_cast<uintptr_t>(grad_ptr) % ga != 0) {
    return Invalid(absl::StrCat(who, ": grad pointer ", reinterpret_cast<uintptr_t>(grad_ptr),
                                " is not aligned to ", ga, " bytes"));
  }
  NORMUON_RETURN_IF_ERROR(backend_->CheckPointer(param_ptr, absl::StrCat(who, ": param")));
  if (grad_ptr != nullptr) {
    NORMUON_RETURN_IF_ERROR(backend_->CheckPointer(grad_ptr, absl::StrCat(who, ": grad")));
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> Runtime::Register(Kind kind, const normuon_param_desc_t& d) {
  const char* what = kind == Kind::kMatrix ? "register_matrix" : "register_adamw";
  if (finalized_) return absl::FailedPreconditionError(absl::StrCat(what, " after finalize"));
  if (d.struct_size < sizeof(normuon_param_desc_t)) {
    return Invalid(absl::StrCat("desc.struct_size = ", d.struct_size,
                                ": fill it with normuon_param_desc_init"));
  }
  if (d.name == nullptr || d.name[0] == '\0') return Invalid("desc.name is null or empty");
  const std::string name(d.name);
  const std::string who = absl::StrCat("parameter '", name, "'");
  for (const Param& p : params_) {
    if (p.name == name) return Invalid(absl::StrCat("desc.name: ", who, " is already registered"));
  }
  if (d.rows <= 0) return Invalid(absl::StrCat(who, ": desc.rows = ", d.rows, " must be > 0"));
  if (d.cols <= 0) return Invalid(absl::StrCat(who, ": desc.cols = ", d.cols, " must be > 0"));
  if (d.rows > kMaxElements / d.cols) {
    return Invalid(absl::StrCat(who, ": desc.rows x desc.cols = ", d.rows, " x ", d.cols,
                                " is too large (limit 2^40 elements)"));
  }
  if (d.row_begin < 0 || d.row_begin > d.rows) {
    return Invalid(absl::StrCat(who, ": desc.row_begin = ", d.row_begin, " is outside [0, ",
                                d.rows, "]"));
  }
  if (d.row_count < 0 || d.row_count > d.rows - d.row_begin) {
    return Invalid(absl::StrCat(who, ": desc.row_count = ", d.row_count, " with row_begin ",
                                d.row_begin, " does not fit in ", d.rows, " rows"));
  }
  // Whether the ranks' rows cover the parameter exactly is checked across ranks at finalize.
  if (!ValidDType(d.param_dtype)) {
    return Invalid(absl::StrCat(who, ": desc.param_dtype = ", static_cast<int>(d.param_dtype),
                                " is not FP32 or BF16"));
  }
  if (!ValidDType(d.grad_dtype)) {
    return Invalid(absl::StrCat(who, ": desc.grad_dtype = ", static_cast<int>(d.grad_dtype),
                                " is not FP32 or BF16"));
  }
  if (d.group < 0 || d.group >= static_cast<int32_t>(groups_.size())) {
    return Invalid(absl::StrCat(who, ": desc.group = ", d.group, " is not a group"));
  }
  const normuon_group_kind_t want = kind == Kind::kMatrix ? NORMUON_GROUP_NORMUON : NORMUON_GROUP_ADAMW;
  if (groups_[d.group].desc.kind != want) {
    return Invalid(absl::StrCat(who, ": desc.group = ", d.group, " is a ",
                                want == NORMUON_GROUP_NORMUON ? "AdamW" : "NorMuon",
                                " group; ", what, " needs a ",
                                want == NORMUON_GROUP_NORMUON ? "NorMuon" : "AdamW", " group"));
  }
  std::vector<int64_t> splits;
  if (d.num_row_splits < 0 || (d.num_row_splits > 0 && d.row_splits == nullptr)) {
    return Invalid(absl::StrCat(who, ": desc.num_row_splits = ", d.num_row_splits,
                                " with row_splits ", d.row_splits == nullptr ? "NULL" : "set"));
  }
  if (d.num_row_splits > 0) {
    if (kind != Kind::kMatrix) {
      return Invalid(absl::StrCat(who, ": desc.row_splits is for matrices; AdamW is elementwise"));
    }
    if (d.num_row_splits > d.rows) {
      return Invalid(absl::StrCat(who, ": desc.num_row_splits = ", d.num_row_splits,
                                  " exceeds rows = ", d.rows));
    }
    int64_t sum = 0;
    for (int32_t i = 0; i < d.num_row_splits; ++i) {
      if (d.row_splits[i] <= 0 || d.row_splits[i] > d.rows) {
        return Invalid(absl::StrCat(who, ": desc.row_splits[", i, "] = ", d.row_splits[i],
                                    " must be in [1, rows]"));
      }
      sum += d.row_splits[i];
      splits.push_back(d.row_splits[i]);
    }
    if (sum != d.rows) {
      return Invalid(absl::StrCat(who, ": desc.row_splits sum to ", sum, ", not rows = ", d.rows));
    }
  }
  if (splits.empty()) splits.push_back(d.rows);
  Param p;
  p.kind = kind;
  p.name = name;
  p.splits = std::move(splits);
  p.rows = d.rows;
  p.cols = d.cols;
  p.row_begin = d.row_begin;
  p.row_count = d.row_count;
  p.param = d.param;
  p.param_dtype = static_cast<DType>(d.param_dtype);
  p.grad = d.grad;
  p.grad_dtype = static_cast<DType>(d.grad_dtype);
  p.group = d.group;
  NORMUON_RETURN_IF_ERROR(ValidatePointers(p, d.param, d.grad));
  params_.push_back(std::move(p));
  return static_cast<int32_t>(params_.size() - 1);
}

absl::StatusOr<int32_t> Runtime::RegisterMatrix(const normuon_param_desc_t& desc) {
  return Register(Kind::kMatrix, desc);
}

absl::StatusOr<int32_t> Runtime::RegisterAdamW(const normuon_param_desc_t& desc) {
  return Register(Kind::kAdamW, desc);
}

absl::StatusOr<void*> Runtime::Allocate(size_t bytes) {
  NORMUON_ASSIGN_OR_RETURN(void* p, backend_->Alloc(bytes));
  allocations_.push_back(p);
  allocated_bytes_ += bytes;
  return p;
}

uint64_t Runtime::SecondMomentCount(const Param& p) const {
  if (PerElementV(static_cast<Variant>(config_.variant))) {
    return static_cast<uint64_t>(p.row_count * p.cols);
  }
  if (config_.neuron_axis == NORMUON_NEURON_COLUMNS) {
    return static_cast<uint64_t>(p.splits.size() * p.cols);  // per row block, replicated
  }
  return static_cast<uint64_t>(p.row_count);
}

uint64_t Runtime::SecondStateCount(const Param& p) const {
  if (p.kind == Kind::kAdamW) return static_cast<uint64_t>(p.row_count * p.cols);
  return config_.variant == NORMUON_VARIANT_MUON ? 0 : SecondMomentCount(p);
}

uint64_t Runtime::MemoryRequired() const {
  if (finalized_) return allocated_bytes_;
  const uint64_t ns = SizeOf(ns_dtype_);
  uint64_t total = sizeof(StepControl) + sizeof(GroupScalars) * groups_.size();
  for (const Param& p : params_) {
    const uint64_t local = static_cast<uint64_t>(p.row_count * p.cols);
    if (p.kind == Kind::kMatrix) {
      total += local * 4 + SecondMomentCount(p) * 8;  // momentum, v, v_new
      total += static_cast<uint64_t>(p.rows * p.cols) * ns * 2;      // U and O on the owner
      total += static_cast<uint64_t>(p.rows) * 8 + 4;                // row slots, scale
    } else {
      total += local * 8 + 8;  // exp_avg, exp_avg_sq, step count
    }
  }
  return total;
}

absl::Status Runtime::AllGatherHostBytes(const void* in, void* out, size_t bytes) {
  if (!comm_->UsesDeviceMemory()) return comm_->AllGather(in, out, bytes, nullptr);
  // A device communicator moves device memory: stage through a scratch buffer, freed here (set-up
  // only; the step never allocates). The collective runs on the default stream, which the
  // backend's synchronous copies also use.
  const size_t total = bytes * static_cast<size_t>(world_ + 1);
  NORMUON_ASSIGN_OR_RETURN(void* scratch, backend_->Alloc(total));
  char* dev_out = static_cast<char*>(scratch);
  char* dev_in = dev_out + bytes * static_cast<size_t>(world_);
  absl::Status s = backend_->CopyFromHost(dev_in, in, bytes);
  if (s.ok()) s = comm_->AllGather(dev_in, dev_out, bytes, nullptr);
  if (s.ok()) s = backend_->CopyToHost(out, dev_out, bytes * static_cast<size_t>(world_));
  backend_->Free(scratch);
  return s;
}

absl::StatusOr<std::vector<std::vector<sharding::RowShard>>> Runtime::AgreeOnRegistrations(
    const std::vector<sharding::RegistrationRecord>& records,
    const std::vector<int32_t>& matrix_units) {
  const std::string mine = sharding::EncodeRegistration(records);
  // Headers first (fixed size): the record counts must agree before the records can be
  // gathered as equal-sized blocks.
  const size_t hb = sharding::kRegistrationHeaderBytes;
  std::string headers(hb * world_, '\0');
  NORMUON_RETURN_IF_ERROR(AllGatherHostBytes(mine.data(), headers.data(), hb));
  std::vector<std::string> per_rank(world_);
  for (int r = 0; r < world_; ++r) per_rank[r] = headers.substr(r * hb, hb);
  NORMUON_RETURN_IF_ERROR(sharding::CheckRegistrationHeadersAgree(per_rank));
  std::string all(mine.size() * world_, '\0');
  NORMUON_RETURN_IF_ERROR(AllGatherHostBytes(mine.data(), all.data(), mine.size()));
  for (int r = 0; r < world_; ++r) per_rank[r] = all.substr(r * mine.size(), mine.size());
  NORMUON_RETURN_IF_ERROR(sharding::CheckRegistrationsAgree(per_rank));
  std::vector<std::vector<sharding::RowShard>> shards(matrix_units.size(),
                                                      std::vector<sharding::RowShard>(world_));
  for (int r = 0; r < world_; ++r) {
    NORMUON_ASSIGN_OR_RETURN(std::vector<sharding::DecodedRecord> decoded,
                     sharding::DecodeRegistration(per_rank[r]));
    for (size_t k = 0; k < matrix_units.size(); ++k) {
      const sharding::RegistrationRecord& rec = decoded[matrix_units[k]].record;
      shards[k][r] = sharding::RowShard{rec.row_begin, rec.row_count};
    }
  }
  return shards;
}

char* Runtime::OwnerRows(void* base, int32_t k, int64_t row) const {
  const MatrixWork& w = matrices_[k];
  return static_cast<char*>(base) + row * w.cols * static_cast<int64_t>(SizeOf(ns_dtype_));
}

absl::Status Runtime::Finalize() {
  if (finalized_) return absl::FailedPreconditionError("finalize called twice");
  const int64_t ns = static_cast<int64_t>(SizeOf(ns_dtype_));
  // The units of the plan: every row block of every matrix ("matrix k", with this rank's part of
  // it), and the AdamW parameters, in registration order.
  std::vector<int32_t> matrix_params;     // per k: the parameter
  std::vector<int64_t> block_first_row;   // per k: the block's first global row
  std::vector<sharding::MatrixShape> shapes;
  std::vector<sharding::RegistrationRecord> records;
  std::vector<int32_t> matrix_units;      // per k: its index in records
  for (int32_t i = 0; i < static_cast<int32_t>(params_.size()); ++i) {
    const Param& p = params_[i];
    if (p.kind != Kind::kMatrix) {
      records.push_back({p.name, p.rows, p.cols, p.row_begin, p.row_count,
                         sharding::ParamKind::kAdamw});
      continue;
    }
    int64_t first = 0;
    for (size_t b = 0; b < p.splits.size(); ++b) {
      const int64_t rows = p.splits[b];
      // This rank's rows of the block, relative to the block (an empty part starts at the
      // nearest block edge, so every rank's parts form a cover of the block).
      const int64_t lo = std::max(p.row_begin, first);
      const int64_t hi = std::min(p.row_begin + p.row_count, first + rows);
      const int64_t begin = std::min(std::max(p.row_begin - first, int64_t{0}), rows);
      const std::string name =
          p.splits.size() == 1 ? p.name : absl::StrCat(p.name, "[rows ", first, "+", rows, "]");
      matrix_params.push_back(i);
      block_first_row.push_back(first);
      matrix_units.push_back(static_cast<int32_t>(records.size()));
      shapes.push_back({name, rows, p.cols});
      records.push_back({name, rows, p.cols, hi > lo ? lo - first : begin,
                         std::max<int64_t>(hi - lo, 0), sharding::ParamKind::kMatrix});
      first += rows;
    }
  }
  // Every rank must agree on what was registered (blocks included), and the rows of every unit
  // must be covered exactly; CheckRegistrationsAgree checks both.
  NORMUON_ASSIGN_OR_RETURN(auto shards, AgreeOnRegistrations(records, matrix_units));
  sharding::PlanInputs in;
  in.shapes = shapes;
  in.shards = shards;
  in.world = world_;
  in.rank = rank_;
  in.wire_bytes_per_element = ns;
  // Buckets in reverse registration order: one for the sequential schedule, one per matrix, or
  // runs of about bucket_bytes; owners balanced within each bucket.
  NORMUON_ASSIGN_OR_RETURN(
      std::vector<std::vector<int>> bucket_members,
      sharding::ScheduleBuckets(shapes, ns,
                                config_.schedule == NORMUON_SCHEDULE_SEQUENTIAL
                                    ? sharding::BucketRule::kAll
                                : config_.schedule == NORMUON_SCHEDULE_PER_MATRIX
                                    ? sharding::BucketRule::kPerMatrix
                                    : sharding::BucketRule::kBytes,
                                static_cast<int64_t>(config_.bucket_bytes), world_));
  const sharding::OwnerPolicy policy = config_.owner_policy == NORMUON_OWNER_COST_BALANCED
                                           ? sharding::OwnerPolicy::kCostBalanced
                                           : sharding::OwnerPolicy::kRoundRobin;
  if (bucket_members.empty()) {
    in.owners.clear();
  } else {
    NORMUON_ASSIGN_OR_RETURN(in.owners,
                     sharding::AssignOwnersPerBucket(shapes, bucket_members, world_, policy));
  }
  // Slots per matrix: two floats per global row, and with the column axis one per column.
  const bool column_axis = config_.neuron_axis == NORMUON_NEURON_COLUMNS;
  std::vector<int64_t> slot_offset(shapes.size());
  int64_t slot_total = 0;
  for (size_t k = 0; k < shapes.size(); ++k) {
    slot_offset[k] = slot_total;
    slot_total += 2 * shapes[k].rows + (column_axis ? shapes[k].cols : 0);
  }
  if (world_ > 1 && config_.backend == NORMUON_BACKEND_CPU) {
    // N ranks share this machine's cores: one BLAS thread each (DESIGN.md section 6).
    openblas_set_num_threads(1);
  }

  NORMUON_ASSIGN_OR_RETURN(void* control, Allocate(sizeof(StepControl)));
  control_ = static_cast<StepControl*>(control);
  StepControl init{kNoParam, 0, 0, 0};
  NORMUON_RETURN_IF_ERROR(backend_->CopyFromHost(control_, &init, sizeof(init)));
  NORMUON_ASSIGN_OR_RETURN(void* scalars, Allocate(sizeof(GroupScalars) * groups_.size()));
  dev_scalars_ = static_cast<GroupScalars*>(scalars);
  host_scalars_.resize(groups_.size());

  // Row slots: two floats per global row of every matrix, then one non-finite flag per rank,
  // then two floats per rank for the hash of the set it marked with grad_ready.
  flag_base_ = slot_total;
  slot_count_ = flag_base_ + 3 * world_;
  NORMUON_ASSIGN_OR_RETURN(void* sl, Allocate(static_cast<size_t>(slot_count_) * 4));
  slots_local_ = static_cast<float*>(sl);
  if (world_ > 1) {
    NORMUON_ASSIGN_OR_RETURN(void* st, Allocate(static_cast<size_t>(slot_count_) * 4));
    slots_total_ = static_cast<float*>(st);
  } else {
    slots_total_ = slots_local_;  // one rank: its slots are the complete ones
  }

  // Per bucket: its plan, and its message buffers, one region per peer as the plan lays out.
  for (const std::vector<int>& members : bucket_members) {
    Bucket b;
    b.matrices.assign(members.begin(), members.end());
    NORMUON_ASSIGN_OR_RETURN(b.plan, sharding::MakeRankPlanForMatrices(in, members));
    b.send_offset.assign(world_, 0);
    b.recv_offset.assign(world_, 0);
    int64_t send_total = 0, recv_total = 0;
    for (int p = 0; p < world_; ++p) {
      b.send_offset[p] = send_total;
      b.recv_offset[p] = recv_total;
      send_total += b.plan.gather_send_bytes[p];
      recv_total += b.plan.gather_recv_bytes[p];
    }
    NORMUON_ASSIGN_OR_RETURN(void* sb, Allocate(static_cast<size_t>(send_total)));
    NORMUON_ASSIGN_OR_RETURN(void* rb, Allocate(static_cast<size_t>(recv_total)));
    b.send_buf = static_cast<char*>(sb);
    b.recv_buf = static_cast<char*>(rb);
    // The scatter sends from the gather's receive layout and receives into its send layout.
    for (int p = 0; p < world_; ++p) {
      const uint64_t out = static_cast<uint64_t>(b.plan.gather_send_bytes[p]);
      const uint64_t back = static_cast<uint64_t>(b.plan.gather_recv_bytes[p]);
      if (out > 0) {
        b.gather_sends.push_back({p, b.send_buf + b.send_offset[p], out});
        b.scatter_recvs.push_back({p, b.send_buf + b.send_offset[p], out});
      }
      if (back > 0) {
        b.gather_recvs.push_back({p, b.recv_buf + b.recv_offset[p], back});
        b.scatter_sends.push_back({p, b.recv_buf + b.recv_offset[p], back});
      }
    }
    buckets_.push_back(std::move(b));
  }

  // The owner's full U and O, one pair of buffers per same-shape batch of owned matrices.
  const int32_t nmat = static_cast<int32_t>(matrix_params.size());
  owner_u_.assign(nmat, nullptr);
  owner_o_.assign(nmat, nullptr);
  for (Bucket& bucket : buckets_) {
    for (const sharding::ShapeBatch& sb_ : bucket.plan.batches) {
      const int64_t elems = sb_.rows * sb_.cols;
      const int64_t count = static_cast<int64_t>(sb_.matrices.size());
      NORMUON_ASSIGN_OR_RETURN(void* u, Allocate(static_cast<size_t>(elems * ns * count)));
      NORMUON_ASSIGN_OR_RETURN(void* o, Allocate(static_cast<size_t>(elems * ns * count)));
      NsBatch b;
      b.rows = sb_.rows;
      b.cols = sb_.cols;
      b.count = count;
      b.u = u;
      b.o = o;
      b.dtype = ns_dtype_;
      b.ns_eps = config_.ns_eps;
      b.ns_norm_scale = config_.ns_norm_scale;
      b.coefficients = coefficients_;
      for (int64_t j = 0; j < count; ++j) {
        owner_u_[sb_.matrices[j]] = static_cast<char*>(u) + j * elems * ns;
        owner_o_[sb_.matrices[j]] = static_cast<char*>(o) + j * elems * ns;
      }
      bucket.batches.push_back(static_cast<int32_t>(batches_.size()));
      batches_.push_back(b);
    }
  }
  std::vector<int32_t> bucket_of(nmat, -1);
  for (int32_t b = 0; b < static_cast<int32_t>(buckets_.size()); ++b) {
    for (int32_t k : buckets_[b].matrices) bucket_of[k] = b;
  }

  const bool per_element_v = PerElementV(static_cast<Variant>(config_.variant));
  for (int32_t k = 0; k < nmat; ++k) {
    Param& p = params_[matrix_params[k]];
    if (p.blocks.empty()) {
      // The parameter's state, allocated once; its blocks point inside it.
      const uint64_t local = static_cast<uint64_t>(p.row_count * p.cols);
      const uint64_t v_count = SecondMomentCount(p);
      NORMUON_ASSIGN_OR_RETURN(void* m, Allocate(local * 4));
      NORMUON_ASSIGN_OR_RETURN(void* v, Allocate(v_count * 4));
      NORMUON_ASSIGN_OR_RETURN(void* vn, Allocate(v_count * 4));
      p.momentum = static_cast<float*>(m);
      p.second = static_cast<float*>(v);
      p.v_new = static_cast<float*>(vn);
      p.work = k;
    }
    p.blocks.push_back(k);
    const sharding::RowShard mine = shards[k][rank_];
    // The block's first local row within this rank's rows of the parameter.
    const int64_t local_row = mine.row_count > 0 ? block_first_row[k] + mine.row_begin - p.row_begin
                                                 : 0;
    block_local_row_.push_back(local_row);
    NORMUON_ASSIGN_OR_RETURN(void* scale, Allocate(4));
    MatrixWork w;
    w.index = matrix_params[k];
    w.rows = shapes[k].rows;
    w.cols = p.cols;
    w.row_begin = mine.row_begin;
    w.row_count = mine.row_count;
    w.param = OffsetRows(p.param, local_row, p.cols, p.param_dtype);
    w.param_dtype = p.param_dtype;
    w.grad = OffsetRows(p.grad, local_row, p.cols, p.grad_dtype);
    w.grad_dtype = p.grad_dtype;
    w.momentum = p.momentum + local_row * p.cols;
    const int64_t v_at = per_element_v ? local_row * p.cols
                         : column_axis ? static_cast<int64_t>(p.blocks.size() - 1) * p.cols
                                       : local_row;
    w.v = p.second + v_at;
    w.v_new = p.v_new + v_at;
    // This rank's rows of U are written where they travel from: inside the owner's full buffer
    // when this rank owns the matrix, else into the message to the owner. O comes back to the
    // same place.
    const int owner = in.owners[k];
    char* rows_at = nullptr;
    if (owner == rank_) {
      rows_at = static_cast<char*>(owner_u_[k]) + w.row_begin * p.cols * ns;
      w.o_rows = static_cast<char*>(owner_o_[k]) + w.row_begin * p.cols * ns;
    } else {
      const Bucket& bucket = buckets_[bucket_of[k]];
      for (const sharding::Segment& seg : bucket.plan.gather_sends[owner]) {
        if (seg.matrix == k) rows_at = bucket.send_buf + bucket.send_offset[owner] + seg.offset;
      }
      w.o_rows = rows_at;
    }
    w.u_rows = rows_at;
    w.row_slots = slots_local_ + slot_offset[k];
    w.row_slots_total = slots_total_ + slot_offset[k];
    w.column_axis = column_axis;
    w.scale = static_cast<float*>(scale);
    w.scalars = dev_scalars_ + p.group;
    w.variant = static_cast<Variant>(config_.variant);
    w.nesterov = config_.nesterov != 0;
    w.ns_dtype = ns_dtype_;
    w.shape_factor =
        static_cast<float>(ShapeFactor(config_.variant, config_.lr_adjust, w.rows, w.cols));
    w.cautious_wd = config_.cautious_weight_decay != 0;
    w.control = control_;
    matrices_.push_back(w);
  }

  int64_t adamw_count = 0;
  for (const Param& p : params_) adamw_count += p.kind == Kind::kAdamW;
  NORMUON_ASSIGN_OR_RETURN(void* steps, Allocate(sizeof(int64_t) * std::max<int64_t>(adamw_count, 1)));
  adamw_steps_ = static_cast<int64_t*>(steps);
  for (int32_t i = 0; i < static_cast<int32_t>(params_.size()); ++i) {
    Param& p = params_[i];
    if (p.kind != Kind::kAdamW) continue;
    const uint64_t local = static_cast<uint64_t>(p.row_count * p.cols);
    NORMUON_ASSIGN_OR_RETURN(void* m, Allocate(local * 4));
    NORMUON_ASSIGN_OR_RETURN(void* v, Allocate(local * 4));
    p.momentum = static_cast<float*>(m);
    p.second = static_cast<float*>(v);
    AdamWWork w;
    w.index = i;
    w.count = static_cast<int64_t>(local);
    w.param = p.param;
    w.param_dtype = p.param_dtype;
    w.grad = p.grad;
    w.grad_dtype = p.grad_dtype;
    w.exp_avg = p.momentum;
    w.exp_avg_sq = p.second;
    w.step = adamw_steps_ + adamw_.size();
    w.scalars = dev_scalars_ + p.group;
    w.cautious_wd = config_.cautious_weight_decay != 0;
    p.work = static_cast<int32_t>(adamw_.size());
    adamw_.push_back(w);
  }
  grad_marked_.assign(params_.size(), 0);
  bucket_of_matrix_ = bucket_of;
  trace_main_.Reserve(16);
  trace_compute_.Reserve(3 * buckets_.size() + 4);
  trace_comm_.Reserve(2 * buckets_.size() + 4);
  bucket_pending_.resize(buckets_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    bucket_pending_[b] = static_cast<int32_t>(buckets_[b].matrices.size());
  }
  NORMUON_RETURN_IF_ERROR(backend_->Prepare(batches_));
  if (config_.cuda_graph) {
    NORMUON_RETURN_IF_ERROR(backend_->PrepareGraph(sizeof(GroupScalars) * groups_.size()));
  }
  // An asynchronous backend overlaps the exchanges with Newton-Schulz on two streams, driven by
  // the same two-thread pipeline as the CPU (which then only queues work).
  two_streams_ = !backend_->IsSynchronous() && world_ > 1 &&
                 config_.schedule != NORMUON_SCHEDULE_SEQUENTIAL && !buckets_.empty();
  const int32_t nb = static_cast<int32_t>(buckets_.size());
  if (two_streams_) NORMUON_RETURN_IF_ERROR(backend_->PrepareCommStream(4 * nb + 1));
  if (!backend_->IsSynchronous()) {
    // Step start, finite check (start and end), the buckets' stages (five ends, or with two
    // streams a start and an end each and two wait marks), the join's start, the all-reduce's
    // start, norms, update, AdamW.
    const int32_t marks = 3 + (two_streams_ ? 12 : 5) * nb + 5;
    mark_phase_.assign(marks, -1);
    mark_bucket_.assign(marks, -1);
    mark_from_.assign(marks, -1);
    NORMUON_RETURN_IF_ERROR(backend_->PrepareMarks(marks));
  }
  if (config_.schedule != NORMUON_SCHEDULE_SEQUENTIAL && (backend_->IsSynchronous() || two_streams_)) {
    BucketPipeline::Stages stages;
    if (!two_streams_) {
      stages.blend = [this](int b) { return BlendBucket(b); };
      stages.gather = [this](int b) { return GatherBucket(b); };
      stages.compute = [this](int b) { return ComputeBucket(b); };
      stages.scatter = [this](int b) { return ScatterBucket(b); };
      stages.stats = [this](int b) { return StatsBucket(b); };
    } else {
      // Each stage waits for its input's hand-off event on its own stream, runs between a start
      // and an end mark, and records its output's event: blend -> gather -> compute -> scatter ->
      // stats, slots 4b + 0..3 (the last slot, 4 * buckets, joins the streams at the end).
      auto stage = [this](int index, int b, bool on_comm,
                          absl::Status (Runtime::*run)(int)) -> absl::Status {
        if (index > 0) {
          // The step's stream waiting on communication: exposed communication (DESIGN.md
          // section 6) is the time from this mark to the stage's start mark.
          if (!on_comm) NORMUON_RETURN_IF_ERROR(backend_->Mark(WaitSlot(index, b)));
          NORMUON_RETURN_IF_ERROR(backend_->WaitHandoff(4 * b + index - 1, on_comm));
        }
        NORMUON_RETURN_IF_ERROR(PipelineMark(index, b, /*end=*/false));
        NORMUON_RETURN_IF_ERROR((this->*run)(b));
        NORMUON_RETURN_IF_ERROR(PipelineMark(index, b, /*end=*/true));
        if (index < 4) NORMUON_RETURN_IF_ERROR(backend_->RecordHandoff(4 * b + index, on_comm));
        return absl::OkStatus();
      };
      stages.blend = [stage](int b) { return stage(0, b, false, &Runtime::BlendBucket); };
      stages.gather = [stage](int b) { return stage(1, b, true, &Runtime::GatherBucket); };
      stages.compute = [stage](int b) { return stage(2, b, false, &Runtime::ComputeBucket); };
      stages.scatter = [stage](int b) { return stage(3, b, true, &Runtime::ScatterBucket); };
      stages.stats = [stage](int b) { return stage(4, b, false, &Runtime::StatsBucket); };
    }
    std::vector<int64_t> counts;
    for (const Bucket& b : buckets_) counts.push_back(static_cast<int64_t>(b.matrices.size()));
    pipeline_ = std::make_unique<BucketPipeline>(static_cast<int>(buckets_.size()), stages,
                                                 sharding::PipelineOrder(counts, world_));
  }
  finalized_ = true;
  return absl::OkStatus();
}

void* Runtime::CollectiveStream() { return two_streams_ ? backend_->CommStream() : stream_; }

absl::Status Runtime::PipelineMark(int stage, int bucket, bool end) {
  static constexpr int32_t kPhaseOfStage[5] = {kTraceBlend, kTraceGather, kTraceCompute,
                                               kTraceScatter, kTraceStats};
  // Fixed slots: the two threads record concurrently, each on its own stream and slots.
  const int32_t slot = StageSlot(stage, bucket, end);
  mark_phase_[slot] = end ? kPhaseOfStage[stage] : -1;
  mark_bucket_[slot] = bucket;
  mark_from_[slot] = end ? slot - 1 : -1;
  return stage == 1 || stage == 3 ? backend_->MarkComm(slot) : backend_->Mark(slot);
}

absl::Status Runtime::BlendBucket(int b) {
  StageTimer timer(&stage_ms_[0], &trace_compute_, kTraceBlend, b);
  for (int32_t k : buckets_[b].matrices) NORMUON_RETURN_IF_ERROR(backend_->Blend(matrices_[k]));
  return absl::OkStatus();
}

absl::Status Runtime::GatherBucket(int b) {
  const Bucket& bucket = buckets_[b];
  if (world_ == 1) return absl::OkStatus();  // a single rank's rows are written in place
  StageTimer timer(&stage_ms_[1], &trace_comm_, kTraceGather, b);
  return comm_->Exchange(bucket.gather_sends, bucket.gather_recvs, CollectiveStream());
}

absl::Status Runtime::ComputeBucket(int b) {
  StageTimer timer(&stage_ms_[2], &trace_compute_, kTraceCompute, b);
  const Bucket& bucket = buckets_[b];
  // Unpack every peer's rows into the owner's full U.
  for (int p = 0; p < world_; ++p) {
    for (const sharding::Segment& seg : bucket.plan.gather_recvs[p]) {
      NORMUON_RETURN_IF_ERROR(backend_->CopyAsync(OwnerRows(owner_u_[seg.matrix], seg.matrix, seg.row_begin),
                                          bucket.recv_buf + bucket.recv_offset[p] + seg.offset,
                                          static_cast<size_t>(seg.bytes)));
    }
  }
  for (int32_t i : bucket.batches) NORMUON_RETURN_IF_ERROR(backend_->NewtonSchulz(batches_[i]));
  // Neuron axis = columns: the owner, which holds O whole, makes the column statistics.
  for (int32_t k : bucket.matrices) {
    if (matrices_[k].column_axis && owner_o_[k] != nullptr) {
      NORMUON_RETURN_IF_ERROR(backend_->ColumnStats(matrices_[k], owner_o_[k]));
    }
  }
  // Pack each peer's rows of O into the gather's receive layout; the scatter sends them back,
  // landing where that peer's U rows left from (its MatrixWork::o_rows).
  for (int p = 0; p < world_; ++p) {
    for (const sharding::Segment& seg : bucket.plan.gather_recvs[p]) {
      NORMUON_RETURN_IF_ERROR(backend_->CopyAsync(bucket.recv_buf + bucket.recv_offset[p] + seg.offset,
                                          OwnerRows(owner_o_[seg.matrix], seg.matrix, seg.row_begin),
                                          static_cast<size_t>(seg.bytes)));
    }
  }
  return absl::OkStatus();
}

absl::Status Runtime::ScatterBucket(int b) {
  const Bucket& bucket = buckets_[b];
  if (world_ == 1) return absl::OkStatus();
  StageTimer timer(&stage_ms_[3], &trace_comm_, kTraceScatter, b);
  return comm_->Exchange(bucket.scatter_sends, bucket.scatter_recvs, CollectiveStream());
}

absl::Status Runtime::StatsBucket(int b) {
  StageTimer timer(&stage_ms_[4], &trace_compute_, kTraceStats, b);
  for (int32_t k : buckets_[b].matrices) {
    // Column-axis statistics were made by the owner (ComputeBucket).
    if (!matrices_[k].column_axis) NORMUON_RETURN_IF_ERROR(backend_->RowStats(matrices_[k]));
  }
  return absl::OkStatus();
}

absl::Status Runtime::CheckParam(int32_t param) const {
  if (param < 0 || param >= static_cast<int32_t>(params_.size())) {
    return Invalid(absl::StrCat("param = ", param, " is not a registered parameter (",
                                params_.size(), " registered)"));
  }
  return absl::OkStatus();
}

absl::Status Runtime::Bind(int32_t param, void* param_ptr, const void* grad_ptr) {
  NORMUON_RETURN_IF_ERROR(CheckParam(param));
  // Inside a step begun by grad_ready, a matrix already marked may be in flight on the
  // pipeline's threads; the others (and AdamW parameters) are read only at step.
  if (step_begun_ && params_[param].kind == Kind::kMatrix && grad_marked_[param]) {
    return absl::FailedPreconditionError(absl::StrCat(
        "bind of '", params_[param].name,
        "' after its normuon_grad_ready in this step: its buffers are in use until step"));
  }
  Param& p = params_[param];
  NORMUON_RETURN_IF_ERROR(ValidatePointers(p, param_ptr, grad_ptr));
  // Graph mode: the captured graph holds the old pointers; the next step captures again.
  if (finalized_ && (p.param != param_ptr || p.grad != grad_ptr)) backend_->DropGraph();
  p.param = param_ptr;
  p.grad = grad_ptr;
  if (finalized_) {
    if (p.kind == Kind::kMatrix) {
      for (int32_t k : p.blocks) {
        matrices_[k].param = OffsetRows(param_ptr, block_local_row_[k], p.cols, p.param_dtype);
        matrices_[k].grad = OffsetRows(grad_ptr, block_local_row_[k], p.cols, p.grad_dtype);
      }
    } else {
      adamw_[p.work].param = param_ptr;
      adamw_[p.work].grad = grad_ptr;
    }
  }
  return absl::OkStatus();
}

absl::Status Runtime::DeviceMark(int32_t phase, int32_t bucket) {
  if (backend_->IsSynchronous() || marks_used_ >= static_cast<int32_t>(mark_phase_.size())) {
    return absl::OkStatus();
  }
  mark_phase_[marks_used_] = phase;
  mark_bucket_[marks_used_] = bucket;
  mark_from_[marks_used_] = -1;  // the span starts at the previous mark
  return backend_->Mark(marks_used_++);
}

absl::Status Runtime::RunBuckets() {
  profile_.buckets = static_cast<int32_t>(buckets_.size());
  for (const Bucket& b : buckets_) {
    for (int p = 0; p < world_; ++p) {
      profile_.bytes_sent += static_cast<uint64_t>(b.plan.gather_send_bytes[p] +
                                                   b.plan.scatter_send_bytes[p]);
      profile_.bytes_received += static_cast<uint64_t>(b.plan.gather_recv_bytes[p] +
                                                       b.plan.scatter_recv_bytes[p]);
    }
  }
  if (pipeline_ != nullptr) {
    BucketPipeline::Timing timing;
    absl::Status s = pipeline_->Wait(&timing);
    if (two_streams_) {
      // The step's stream waits for everything queued on the communication stream, also after a
      // failure (a later step must not overwrite buffers a copy still reads).
      const int32_t join = 4 * static_cast<int32_t>(buckets_.size());
      join_marks_[0] = marks_used_;
      absl::Status joined = DeviceMark(-1, -1);
      if (joined.ok()) joined = backend_->RecordHandoff(join, /*on_comm=*/true);
      if (joined.ok()) joined = backend_->WaitHandoff(join, /*on_comm=*/false);
      join_marks_[1] = marks_used_;  // the next mark (the all-reduce's start) ends the wait
      if (s.ok()) s = joined;
      if (!s.ok()) {
        join_marks_[0] = join_marks_[1] = -1;
        // Some stage marks were not recorded this step: no spans from them.
        std::fill(mark_phase_.begin() + 1, mark_phase_.begin() + 1 + PipelineSlots(), -1);
      }
    }
    profile_.exposed_comm_ms = timing.exposed_comm_ms;
    profile_.momentum_ms = stage_ms_[0];
    profile_.gather_ms = stage_ms_[1];
    profile_.newton_schulz_ms = stage_ms_[2];
    profile_.scatter_ms = stage_ms_[3];
    profile_.row_stats_ms = stage_ms_[4];
    return s;
  }
  // Sequential: every stage inline, bucket after bucket; all communication is exposed.
  for (int b = 0; b < static_cast<int>(buckets_.size()); ++b) {
    NORMUON_RETURN_IF_ERROR(BlendBucket(b));
    NORMUON_RETURN_IF_ERROR(DeviceMark(kTraceBlend, b));
    NORMUON_RETURN_IF_ERROR(GatherBucket(b));
    NORMUON_RETURN_IF_ERROR(DeviceMark(kTraceGather, b));
    NORMUON_RETURN_IF_ERROR(ComputeBucket(b));
    NORMUON_RETURN_IF_ERROR(DeviceMark(kTraceCompute, b));
    NORMUON_RETURN_IF_ERROR(ScatterBucket(b));
    NORMUON_RETURN_IF_ERROR(DeviceMark(kTraceScatter, b));
    NORMUON_RETURN_IF_ERROR(StatsBucket(b));
    NORMUON_RETURN_IF_ERROR(DeviceMark(kTraceStats, b));
  }
  profile_.momentum_ms = stage_ms_[0];
  profile_.gather_ms = stage_ms_[1];
  profile_.newton_schulz_ms = stage_ms_[2];
  profile_.scatter_ms = stage_ms_[3];
  profile_.row_stats_ms = stage_ms_[4];
  profile_.exposed_comm_ms = stage_ms_[1] + stage_ms_[3];
  return absl::OkStatus();
}

void Runtime::FillHostScalars() {
  for (size_t g = 0; g < groups_.size(); ++g) {
    const normuon_group_desc_t& d = groups_[g].desc;
    host_scalars_[g] = GroupScalars{d.lr, d.weight_decay, d.beta1, d.beta2, d.eps, {0, 0, 0}};
  }
}

absl::Status Runtime::BeginStepWork(void* stream) {
  if (config_.cuda_graph && stream == nullptr) {
    return Invalid("stream is NULL, but config.cuda_graph = 1: the legacy default stream cannot be "
                   "captured into a CUDA graph; pass a stream (cudaStreamNonBlocking)");
  }
  step_begun_ = true;
  stream_ = stream;
  // Graph mode: nothing runs before step, which captures or launches the whole step (GraphStep).
  if (config_.cuda_graph) return absl::OkStatus();
  return StartStep(/*copy_scalars=*/true);
}

absl::Status Runtime::StartStep(bool copy_scalars) {
  FillHostScalars();
  stepped_ = true;
  normuon_step_profile_init(&profile_);
  std::fill(std::begin(stage_ms_), std::end(stage_ms_), 0.0);
  step_clock_ = PhaseClock();
  trace_main_.Reset();
  trace_compute_.Reset();
  trace_comm_.Reset();
  NORMUON_RETURN_IF_ERROR(backend_->BeginStep(
      stream_, host_scalars_.data(), dev_scalars_,
      copy_scalars ? sizeof(GroupScalars) * host_scalars_.size() : 0, control_));
  marks_used_ = 0;
  mark_base_ = std::chrono::steady_clock::now();
  NORMUON_RETURN_IF_ERROR(DeviceMark(-1, -1));
  join_marks_[0] = join_marks_[1] = -1;
  if (two_streams_ && !mark_phase_.empty()) {
    // The pipeline's fixed slots come next; the step thread's marks follow them.
    std::fill(mark_phase_.begin() + 1, mark_phase_.begin() + 1 + PipelineSlots(), -1);
    marks_used_ = 1 + PipelineSlots();
  }
  return absl::OkStatus();
}

uint32_t Runtime::MarkedSetHash() const {
  uint32_t h = 2166136261u;  // FNV-1a over the indices of the marked parameters
  for (size_t i = 0; i < grad_marked_.size(); ++i) {
    if (!grad_marked_[i]) continue;
    for (int shift = 0; shift < 32; shift += 8) {
      h = (h ^ ((static_cast<uint32_t>(i) >> shift) & 0xffu)) * 16777619u;
    }
  }
  return h;
}

absl::Status Runtime::MarkedSetsStatus() const {
  const int32_t e = control_->comm_error;
  if (e < kMarkedSetsDiffer) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "ranks disagree on which parameters were marked with normuon_grad_ready this step "
      "(rank ", e - kMarkedSetsDiffer, " differs from rank 0); every rank must mark the same "
      "parameters"));
}

absl::Status Runtime::GradReady(const int32_t* params, int32_t count, void* stream) {
  if (!finalized_) return absl::FailedPreconditionError("grad_ready before finalize");
  if (count < 0) return Invalid(absl::StrCat("count = ", count, " must be >= 0"));
  if (count > 0 && params == nullptr) return Invalid("params is null");
  // Check the whole list before marking anything.
  for (int32_t i = 0; i < count; ++i) {
    const int32_t p = params[i];
    NORMUON_RETURN_IF_ERROR(CheckParam(p));
    if (params_[p].kind != Kind::kMatrix) {
      return Invalid(absl::StrCat("params[", i, "] = ", p, " ('", params_[p].name,
                                  "') is an AdamW parameter; grad_ready takes matrices only"));
    }
    if (grad_marked_[p]) {
      return Invalid(absl::StrCat("params[", i, "] = ", p, " ('", params_[p].name,
                                  "') was already marked ready in this step"));
    }
    for (int32_t j = 0; j < i; ++j) {
      if (params[j] == p) {
        return Invalid(absl::StrCat("params[", i, "] = ", p, " ('", params_[p].name,
                                    "') is listed twice"));
      }
    }
  }
  if (!step_begun_) NORMUON_RETURN_IF_ERROR(BeginStepWork(stream));
  for (int32_t i = 0; i < count; ++i) {
    const int32_t p = params[i];
    grad_marked_[p] = 1;
    for (int32_t k : params_[p].blocks) {
      const int32_t b = bucket_of_matrix_[k];
      if (--bucket_pending_[b] == 0 && pipeline_ != nullptr) pipeline_->MarkReady(b);
    }
  }
  return absl::OkStatus();
}

absl::Status Runtime::Step(float lr, float weight_decay, void* stream) {
  if (!finalized_) return absl::FailedPreconditionError("step before finalize");
  if (std::isnan(lr) || std::isinf(lr)) return Invalid(absl::StrCat("lr = ", lr, " is not finite"));
  if (std::isnan(weight_decay) || std::isinf(weight_decay)) {
    return Invalid(absl::StrCat("weight_decay = ", weight_decay, " is not finite"));
  }
  if (lr >= 0.0f) groups_[NORMUON_GROUP_MATRIX_DEFAULT].desc.lr = lr;
  if (weight_decay >= 0.0f) groups_[NORMUON_GROUP_MATRIX_DEFAULT].desc.weight_decay = weight_decay;
  // The agreement check needs the set marked by grad_ready before step marks the rest.
  const uint32_t marked_hash = MarkedSetHash();
  const bool begun_by_grad_ready = step_begun_;
  if (!step_begun_) NORMUON_RETURN_IF_ERROR(BeginStepWork(stream));
  step_begun_ = false;
  std::fill(grad_marked_.begin(), grad_marked_.end(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    bucket_pending_[b] = static_cast<int32_t>(buckets_[b].matrices.size());
  }
  if (config_.cuda_graph) return GraphStep(marked_hash);
  return StepWork(begun_by_grad_ready, marked_hash);
}

absl::Status Runtime::GraphStep(uint32_t marked_hash) {
  if (!backend_->HasGraph()) {
    // Capture: the step's calls as an eager step makes them (BeginStep without the scalar copy,
    // which each launch makes), recorded into a graph on the step's stream instead of run.
    NORMUON_RETURN_IF_ERROR(CudaGraphError(backend_->BeginCapture(stream_),
                                 "beginning the capture of the step (nothing ran)"));
    absl::Status s = StartStep(/*copy_scalars=*/false);
    if (s.ok()) s = StepWork(/*begun_by_grad_ready=*/false, marked_hash);
    const absl::Status end = backend_->EndCapture(/*instantiate=*/s.ok());
    if (!s.ok() || !end.ok()) {
      // Nothing of this step ran, and no graph is kept: the next step captures again.
      marks_used_ = 0;
      return CudaGraphError(s.ok() ? end : s,
                            "capturing the step into a CUDA graph failed; nothing of this step "
                            "ran, and the next step captures again");
    }
  } else {
    // Replay: the graph holds the step's work; profile_ and the marks keep what the capture
    // recorded (the same every step).
    stepped_ = true;
    step_clock_ = PhaseClock();
  }
  mark_base_ = std::chrono::steady_clock::now();  // mark 0 runs at the launch, in the graph
  FillHostScalars();
  NORMUON_RETURN_IF_ERROR(CudaGraphError(
      backend_->LaunchGraph(stream_, host_scalars_.data(), dev_scalars_,
                            sizeof(GroupScalars) * host_scalars_.size()),
      "launching the step's graph"));
  profile_.total_ms = step_clock_.TotalMs();
  return absl::OkStatus();
}

absl::Status Runtime::StepWork(bool begun_by_grad_ready, uint32_t marked_hash) {
  PhaseClock& clock = step_clock_;
  if (begun_by_grad_ready) {
    double before_step_ms = 0.0;  // the trainer's backward pass: in total_ms, in no phase
    clock.Lap(&before_step_ms);
  }
  NORMUON_RETURN_IF_ERROR(DeviceMark(-1, -1));  // the finite check's start (after any backward pass)
  if (config_.check_finite) {
    for (const MatrixWork& w : matrices_) {
      NORMUON_RETURN_IF_ERROR(backend_->CheckFinite(w.index, w.grad, w.grad_dtype, w.row_count * w.cols,
                                            control_));
    }
    for (const AdamWWork& w : adamw_) {
      NORMUON_RETURN_IF_ERROR(backend_->CheckFinite(w.index, w.grad, w.grad_dtype, w.count, control_));
    }
  }
  // Alone, a synchronous backend knows at once that the step is lost; with peers every rank
  // still takes part in every collective, and the flags travel with the row slots.
  const bool skip_work = world_ == 1 && backend_->IsSynchronous() && StepSkipped(*control_) &&
                         pipeline_ == nullptr;
  clock.Lap(&profile_.finite_check_ms, &trace_main_, kTraceFiniteCheck);
  NORMUON_RETURN_IF_ERROR(DeviceMark(kTraceFiniteCheck, -1));
  absl::Status comm_status;
  if (!skip_work) {
    comm_status = RunBuckets();  // fills the per-stage times of the profile itself
    if (comm_status.ok()) NORMUON_RETURN_IF_ERROR(DeviceMark(-1, -1));  // the all-reduce's start
    double buckets_wall_ms = 0.0;
    clock.Lap(&buckets_wall_ms);
    if (begun_by_grad_ready && comm_status.ok()) {
      // grad_ready began the step with the scalars of that moment; lr and weight decay may have
      // changed since, and the commit reads them: copied in the step's stream order, after
      // every stage that reads the old ones (the buckets' work is all issued by now).
      FillHostScalars();
      NORMUON_RETURN_IF_ERROR(backend_->RefreshScalars(host_scalars_.data(), dev_scalars_,
                                               sizeof(GroupScalars) * host_scalars_.size()));
    }
    if (comm_status.ok()) {
      if (world_ > 1) {
        // This rank's non-finite flag and the hash of the set it marked with grad_ready ride
        // after the row slots; written and folded on the backend (the device, for CUDA), so
        // every rank skips the same steps without the host waiting.
        NORMUON_RETURN_IF_ERROR(backend_->WriteStepFlags(slots_local_ + flag_base_, rank_, world_,
                                                 marked_hash, control_));
        comm_status = comm_->AllReduceSum(slots_local_, slots_total_,
                                          static_cast<size_t>(slot_count_), stream_);
        profile_.bytes_sent += static_cast<uint64_t>(slot_count_) * 4;
        profile_.bytes_received += static_cast<uint64_t>(slot_count_) * 4;
        if (comm_status.ok()) {
          NORMUON_RETURN_IF_ERROR(backend_->FoldStepFlags(slots_total_ + flag_base_, world_, control_));
          // A synchronous backend can say so now; on CUDA the step shows as skipped in
          // normuon_step_result.
          if (backend_->IsSynchronous()) comm_status = MarkedSetsStatus();
        }
      }
    }
    if (comm_status.ok()) {
      for (const MatrixWork& w : matrices_) {
        if (w.column_axis) NORMUON_RETURN_IF_ERROR(backend_->ColumnUpdate(w));
      }
      for (const MatrixWork& w : matrices_) NORMUON_RETURN_IF_ERROR(backend_->FinishNorms(w));
      clock.Lap(&profile_.row_stats_ms, &trace_main_, kTraceReduce);
      NORMUON_RETURN_IF_ERROR(DeviceMark(kTraceReduce, -1));
      for (const MatrixWork& w : matrices_) NORMUON_RETURN_IF_ERROR(backend_->CommitMatrix(w, control_));
      clock.Lap(&profile_.update_ms, &trace_main_, kTraceCommit);
      NORMUON_RETURN_IF_ERROR(DeviceMark(kTraceCommit, -1));
      for (const AdamWWork& w : adamw_) NORMUON_RETURN_IF_ERROR(backend_->CommitAdamW(w, control_));
      clock.Lap(&profile_.adamw_ms, &trace_main_, kTraceAdamW);
      NORMUON_RETURN_IF_ERROR(DeviceMark(kTraceAdamW, -1));
    } else {
      // A failed collective: nothing was committed; count the step as skipped.
      NORMUON_RETURN_IF_ERROR(backend_->SetCommError(control_));
    }
  }
  NORMUON_RETURN_IF_ERROR(backend_->EndStep(adamw_steps_, static_cast<int64_t>(adamw_.size()), control_));
  profile_.total_ms = clock.TotalMs();
  if (!comm_status.ok()) {
    return absl::Status(comm_status.code(),
                        absl::StrCat("step skipped on ", comm_->Describe(),
                                     ": a collective or a stage failed, nothing was updated: ",
                                     comm_status.message()));
  }
  if (backend_->IsSynchronous() && control_->nonfinite_param != kNoParam) {
    const Param& bad = params_[control_->nonfinite_param];
    return absl::DataLossError(absl::StrCat("step skipped: the gradient of parameter '", bad.name,
                                            "' (param ", control_->nonfinite_param,
                                            ") holds NaN or Inf; nothing was updated"));
  }
  return absl::OkStatus();
}

absl::Status Runtime::StepResult(normuon_step_info_t* info) {
  if (!finalized_) return absl::FailedPreconditionError("step_result before finalize");
  NORMUON_RETURN_IF_ERROR(backend_->WaitStep());
  StepControl c;
  NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(&c, control_, sizeof(c)));
  info->steps_taken = c.steps_taken;
  info->steps_skipped = c.steps_skipped;
  info->last_skipped = stepped_ && StepSkipped(c) ? 1 : 0;
  info->nonfinite_param = c.nonfinite_param == kNoParam ? -1 : c.nonfinite_param;
  return absl::OkStatus();
}

absl::Status Runtime::DeviceSpans(std::vector<TraceSpan>* spans) const {
  NORMUON_RETURN_IF_ERROR(backend_->WaitStep());
  const int64_t base = SpanLog::Ns(mark_base_);
  for (int32_t i = 1; i < marks_used_; ++i) {
    if (mark_phase_[i] < 0) continue;  // a start mark
    const int32_t start = mark_from_[i] >= 0 ? mark_from_[i] : i - 1;
    NORMUON_ASSIGN_OR_RETURN(const double from, backend_->MarkElapsedMs(0, start));
    NORMUON_ASSIGN_OR_RETURN(const double to, backend_->MarkElapsedMs(0, i));
    spans->push_back(TraceSpan{mark_phase_[i], mark_bucket_[i],
                               base + static_cast<int64_t>(from * 1e6),
                               base + static_cast<int64_t>(to * 1e6)});
  }
  return absl::OkStatus();
}

absl::Status Runtime::LastStepProfile(normuon_step_profile_t* profile) const {
  if (!stepped_) return absl::FailedPreconditionError("no step has run yet");
  if (backend_->IsSynchronous()) {
    *profile = profile_;
    return absl::OkStatus();
  }
  // Device time between the marks of the last step (CUDA events), phase by phase.
  std::vector<TraceSpan> spans;
  NORMUON_RETURN_IF_ERROR(DeviceSpans(&spans));
  normuon_step_profile_t p = profile_;  // bytes and bucket count; times are replaced
  p.total_ms = p.finite_check_ms = p.momentum_ms = p.gather_ms = p.newton_schulz_ms = 0.0;
  p.scatter_ms = p.row_stats_ms = p.update_ms = p.adamw_ms = p.exposed_comm_ms = 0.0;
  // The step's device time: from mark 0 to the last mark (the stages of two streams overlap, so
  // their sum would count the overlap twice).
  if (marks_used_ > 1) {
    NORMUON_ASSIGN_OR_RETURN(p.total_ms, backend_->MarkElapsedMs(0, marks_used_ - 1));
  }
  // Exposed communication (DESIGN.md section 6): the time the step's stream waited on
  // communication. One stream: every exchange. Two streams: from the mark before each wait of
  // the step's stream to the mark after it (before Newton-Schulz and row statistics of every
  // bucket, and the final join), when the pipeline's marks are all there.
  if (!two_streams_) {
    for (const TraceSpan& e : spans) {
      if (e.phase == kTraceGather || e.phase == kTraceScatter) {
        p.exposed_comm_ms += (e.end_ns - e.begin_ns) / 1e6;
      }
    }
  } else if (join_marks_[0] >= 0 && join_marks_[1] < marks_used_) {
    for (int32_t b = 0; b < static_cast<int32_t>(buckets_.size()); ++b) {
      for (int stage : {2, 4}) {
        NORMUON_ASSIGN_OR_RETURN(const double ms, backend_->MarkElapsedMs(
                                              WaitSlot(stage, b), StageSlot(stage, b, false)));
        p.exposed_comm_ms += std::max(0.0, ms);
      }
    }
    NORMUON_ASSIGN_OR_RETURN(const double join_ms,
                     backend_->MarkElapsedMs(join_marks_[0], join_marks_[1]));
    p.exposed_comm_ms += std::max(0.0, join_ms);
  }
  for (const TraceSpan& e : spans) {
    const double ms = (e.end_ns - e.begin_ns) / 1e6;
    switch (e.phase) {
      case kTraceFiniteCheck: p.finite_check_ms += ms; break;
      case kTraceBlend: p.momentum_ms += ms; break;
      case kTraceGather: p.gather_ms += ms; break;
      case kTraceCompute: p.newton_schulz_ms += ms; break;
      case kTraceScatter: p.scatter_ms += ms; break;
      case kTraceStats:
      case kTraceReduce: p.row_stats_ms += ms; break;
      case kTraceCommit: p.update_ms += ms; break;
      case kTraceAdamW: p.adamw_ms += ms; break;
      default: break;
    }
  }
  *profile = p;
  return absl::OkStatus();
}

absl::StatusOr<std::string> Runtime::LastStepTrace() const {
  if (!stepped_) return absl::FailedPreconditionError("no step has run yet");
  // Asynchronous backends: the device spans between marks, on the track of their stage.
  SpanLog device_main, device_compute, device_comm;
  if (!backend_->IsSynchronous()) {
    std::vector<TraceSpan> spans;
    NORMUON_RETURN_IF_ERROR(DeviceSpans(&spans));
    device_main.Reserve(spans.size());
    device_compute.Reserve(spans.size());
    device_comm.Reserve(spans.size());
    for (const TraceSpan& e : spans) {
      SpanLog& log = e.phase == kTraceGather || e.phase == kTraceScatter ? device_comm
                     : e.bucket >= 0                                     ? device_compute
                                                                         : device_main;
      log.AddNs(e);
    }
  }
  const bool device = !backend_->IsSynchronous();
  static const char* const kNames[kTracePhaseCount] = {
      "momentum", "gather", "newton_schulz", "scatter", "row_stats",
      "finite_check", "all_reduce+norms", "update", "adamw"};
  static const char* const kTracks[3] = {"step", "compute", "communication"};
  std::string out;
  const SpanLog* logs[3] = {device ? &device_main : &trace_main_,
                            device ? &device_compute : &trace_compute_,
                            device ? &device_comm : &trace_comm_};
  for (int tid = 0; tid < 3; ++tid) {
    const SpanLog& log = *logs[tid];
    for (size_t i = 0; i < log.size(); ++i) {
      const TraceSpan& e = log[i];
      absl::StrAppend(&out, out.empty() ? "" : ",\n", "{\"name\":\"", kNames[e.phase],
                      "\",\"cat\":\"normuon\",\"ph\":\"X\",\"pid\":", rank_, ",\"tid\":", tid,
                      absl::StrFormat(",\"ts\":%.3f,\"dur\":%.3f", e.begin_ns / 1e3,
                                      (e.end_ns - e.begin_ns) / 1e3));
      if (e.bucket >= 0) absl::StrAppend(&out, ",\"args\":{\"bucket\":", e.bucket, "}");
      out += "}";
    }
    // Track names, so Perfetto shows "rank 2 / compute" rather than bare numbers.
    absl::StrAppend(&out, out.empty() ? "" : ",\n",
                    "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":", rank_, ",\"tid\":", tid,
                    ",\"args\":{\"name\":\"", kTracks[tid], "\"}}");
  }
  absl::StrAppend(&out, ",\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":", rank_,
                  ",\"args\":{\"name\":\"rank ", rank_, "\"}}");
  return out;
}

absl::StatusOr<uint64_t> Runtime::StateSize(int32_t param, normuon_state_kind_t kind) const {
  NORMUON_RETURN_IF_ERROR(CheckParam(param));
  const Param& p = params_[param];
  const uint64_t local = static_cast<uint64_t>(p.row_count * p.cols);
  switch (kind) {
    case NORMUON_STATE_MOMENTUM:
      return p.kind == Kind::kMatrix ? local * 4 : 0;
    case NORMUON_STATE_SECOND_MOMENT:
      return p.kind == Kind::kMatrix ? SecondStateCount(p) * 4 : 0;
    case NORMUON_STATE_EXP_AVG:
      return p.kind == Kind::kAdamW ? local * 4 : 0;
    case NORMUON_STATE_EXP_AVG_SQ:
      return p.kind == Kind::kAdamW ? SecondStateCount(p) * 4 : 0;
    case NORMUON_STATE_STEP:
      return p.kind == Kind::kAdamW ? 8 : 0;
    case NORMUON_STATE_KIND_MIN_ENUM:
    case NORMUON_STATE_KIND_MAX_ENUM:
      break;
  }
  return Invalid(absl::StrCat("kind = ", static_cast<int>(kind), " is not a state kind"));
}

absl::StatusOr<void*> Runtime::StateBuffer(int32_t param, normuon_state_kind_t kind,
                                           uint64_t bytes, const void* host,
                                           absl::string_view host_name) {
  if (!finalized_) return absl::FailedPreconditionError("state access before finalize");
  NORMUON_ASSIGN_OR_RETURN(uint64_t size, StateSize(param, kind));
  const Param& p = params_[param];
  if (size == 0) {
    return Invalid(absl::StrCat("kind = ", static_cast<int>(kind), " does not apply to parameter '",
                                p.name, "'"));
  }
  if (bytes != size) {
    return Invalid(absl::StrCat("bytes = ", bytes, " but the state of '", p.name, "' is ", size));
  }
  if (host == nullptr) return Invalid(absl::StrCat(host_name, " is null"));
  switch (kind) {
    case NORMUON_STATE_MOMENTUM:
    case NORMUON_STATE_EXP_AVG:
      return p.momentum;
    case NORMUON_STATE_SECOND_MOMENT:
    case NORMUON_STATE_EXP_AVG_SQ:
      return p.second;
    case NORMUON_STATE_STEP:
      return adamw_[p.work].step;
    case NORMUON_STATE_KIND_MIN_ENUM:
    case NORMUON_STATE_KIND_MAX_ENUM:
      break;
  }
  return absl::InternalError("unreachable state kind");
}

absl::Status Runtime::GetState(int32_t param, normuon_state_kind_t kind, void* dst,
                               uint64_t bytes) {
  NORMUON_ASSIGN_OR_RETURN(void* buffer, StateBuffer(param, kind, bytes, dst, "dst"));
  return backend_->CopyToHost(dst, buffer, bytes);
}

absl::Status Runtime::SetState(int32_t param, normuon_state_kind_t kind, const void* src,
                               uint64_t bytes) {
  NORMUON_ASSIGN_OR_RETURN(void* buffer, StateBuffer(param, kind, bytes, src, "src"));
  if (kind == NORMUON_STATE_STEP) {
    int64_t value;
    std::memcpy(&value, src, sizeof(value));
    if (value < 0) return Invalid(absl::StrCat("step count = ", value, " must be >= 0"));
  }
  return backend_->CopyFromHost(buffer, src, bytes);
}

}  // namespace normuon
