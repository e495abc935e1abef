// The runtime behind one normuon_runtime_t handle: the registered parameters and groups, the
// state allocated at finalize, and the order of a step (DESIGN.md section 3). It plans and
// orders; the Backend executes. Not thread-safe: the C API serializes calls on one handle.
#ifndef NORMUON_RUNTIME_H_
#define NORMUON_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "normuon/backend.h"
#include "normuon/include/normuon/normuon.h"

namespace normuon {

class Runtime {
 public:
  // Validates config (each bad field is named) and creates the backend it asks for.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(const normuon_config_t& config);
  ~Runtime();

  absl::StatusOr<int32_t> AddGroup(const normuon_group_desc_t& desc);
  absl::Status SetGroupLr(int32_t group, float lr, float weight_decay);
  absl::StatusOr<int32_t> RegisterMatrix(const normuon_param_desc_t& desc);
  absl::StatusOr<int32_t> RegisterAdamW(const normuon_param_desc_t& desc);
  absl::Status Finalize();
  uint64_t MemoryRequired() const;
  absl::Status Bind(int32_t param, void* param_ptr, const void* grad_ptr);
  absl::Status Step(float lr, float weight_decay, void* stream);
  absl::Status StepResult(normuon_step_info_t* info);
  absl::Status LastStepProfile(normuon_step_profile_t* profile) const;
  absl::StatusOr<uint64_t> StateSize(int32_t param, normuon_state_kind_t kind) const;
  absl::Status GetState(int32_t param, normuon_state_kind_t kind, void* dst, uint64_t bytes);
  absl::Status SetState(int32_t param, normuon_state_kind_t kind, const void* src,
                        uint64_t bytes);

  bool finalized() const { return finalized_; }

 private:
  enum class Kind { kMatrix, kAdamW };

  struct Group {
    normuon_group_desc_t desc;
  };

  struct Param {
    Kind kind;
    std::string name;
    int64_t rows, cols, row_begin, row_count;
    void* param;
    DType param_dtype;
    const void* grad;
    DType grad_dtype;
    int32_t group;
    // State (backend memory), set at finalize.
    float* momentum = nullptr;  // matrix: momentum; adamw: exp_avg
    float* second = nullptr;    // matrix: v (row_count); adamw: exp_avg_sq
    float* v_new = nullptr;     // matrix only
    int32_t work = -1;          // index into matrices_ or adamw_
  };

  Runtime(const normuon_config_t& config, std::unique_ptr<Backend> backend);
  absl::StatusOr<int32_t> Register(Kind kind, const normuon_param_desc_t& desc);
  absl::Status CheckParam(int32_t param) const;
  absl::StatusOr<void*> Allocate(size_t bytes);
  absl::Status ValidatePointers(const Param& p, void* param_ptr, const void* grad_ptr);

  normuon_config_t config_;
  std::unique_ptr<Backend> backend_;
  DType ns_dtype_;
  std::vector<std::array<float, 3>> coefficients_;
  std::vector<Group> groups_;
  std::vector<Param> params_;
  bool finalized_ = false;

  // Built at finalize.
  std::vector<MatrixWork> matrices_;
  std::vector<AdamWWork> adamw_;
  std::vector<NsBatch> batches_;
  std::vector<void*> allocations_;
  uint64_t allocated_bytes_ = 0;
  GroupScalars* dev_scalars_ = nullptr;
  std::vector<GroupScalars> host_scalars_;
  StepControl* control_ = nullptr;
  int64_t* adamw_steps_ = nullptr;
  bool stepped_ = false;
  normuon_step_profile_t profile_{};  // phase times of the last step (synchronous backends)
};

}  // namespace normuon

#endif  // NORMUON_RUNTIME_H_
