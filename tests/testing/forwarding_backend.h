// A Backend that forwards every call to another one: tests derive from it and override the few
// calls they observe or change (counting allocations, an asynchronous face over the CPU).
#ifndef NORMUON_TESTS_TESTING_FORWARDING_BACKEND_H_
#define NORMUON_TESTS_TESTING_FORWARDING_BACKEND_H_

#include <memory>
#include <utility>
#include <vector>

#include "kernels/backend.h"

namespace normuon::testing {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  const char* name() const override { return inner_->name(); }
  bool IsSynchronous() const override { return inner_->IsSynchronous(); }
  absl::StatusOr<void*> Alloc(size_t bytes) override { return inner_->Alloc(bytes); }
  void Free(void* p) override { inner_->Free(p); }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyToHost(dst, src, bytes);
  }
  absl::Status CopyFromHost(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyFromHost(dst, src, bytes);
  }
  absl::Status CheckPointer(const void* p, absl::string_view field) override {
    return inner_->CheckPointer(p, field);
  }
  uint64_t NsWorkspaceBytes(const std::vector<NsBatch>& batches) const override {
    return inner_->NsWorkspaceBytes(batches);
  }
  uint64_t NsWorkspaceHeld() const override { return inner_->NsWorkspaceHeld(); }
  absl::Status Prepare(const std::vector<NsBatch>& batches) override {
    return inner_->Prepare(batches);
  }
  absl::Status BeginStep(void* stream, const void* host_scalars, void* dev_scalars, size_t bytes,
                         StepControl* control) override {
    return inner_->BeginStep(stream, host_scalars, dev_scalars, bytes, control);
  }
  absl::Status RefreshScalars(const void* host_scalars, void* dev_scalars,
                              size_t bytes) override {
    return inner_->RefreshScalars(host_scalars, dev_scalars, bytes);
  }
  absl::Status CheckFinite(int32_t index, const void* grad, DType dtype, int64_t count,
                           StepControl* control) override {
    return inner_->CheckFinite(index, grad, dtype, count, control);
  }
  absl::Status Blend(const MatrixWork& w) override { return inner_->Blend(w); }
  absl::Status CopyAsync(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyAsync(dst, src, bytes);
  }
  absl::Status CopyRectAsync(void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                             size_t row_bytes, int64_t rows) override {
    return inner_->CopyRectAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows);
  }
  absl::Status CheckFiniteRows(int32_t index, const void* grad, DType dtype, int64_t rows,
                               int64_t cols, int64_t ld, StepControl* control) override {
    return inner_->CheckFiniteRows(index, grad, dtype, rows, cols, ld, control);
  }
  absl::Status NewtonSchulz(const NsBatch& b) override { return inner_->NewtonSchulz(b); }
  absl::Status RowStats(const MatrixWork& w) override { return inner_->RowStats(w); }
  absl::Status ElementSecondMoment(const MatrixWork& w) override {
    return inner_->ElementSecondMoment(w);
  }
  absl::Status ColumnStats(const MatrixWork& w, const void* o_full) override {
    return inner_->ColumnStats(w, o_full);
  }
  absl::Status ColumnUpdate(const MatrixWork& w) override { return inner_->ColumnUpdate(w); }
  absl::Status FinishNorms(const MatrixWork& w) override { return inner_->FinishNorms(w); }
  absl::Status CommitMatrix(const MatrixWork& w, const StepControl* control) override {
    return inner_->CommitMatrix(w, control);
  }
  absl::Status CommitAdamW(const AdamWWork& w, const StepControl* control) override {
    return inner_->CommitAdamW(w, control);
  }
  absl::Status WriteStepFlags(float* flags, int rank, int world, uint32_t hash,
                              const StepControl* control) override {
    return inner_->WriteStepFlags(flags, rank, world, hash, control);
  }
  absl::Status FoldStepFlags(const float* flags, int world, StepControl* control) override {
    return inner_->FoldStepFlags(flags, world, control);
  }
  absl::Status SetCommError(StepControl* control) override { return inner_->SetCommError(control); }
  absl::Status EndStep(int64_t* adamw_steps, int64_t n, StepControl* control) override {
    return inner_->EndStep(adamw_steps, n, control);
  }
  absl::Status WaitStep() override { return inner_->WaitStep(); }

 protected:
  Backend& inner() { return *inner_; }

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace normuon::testing

#endif  // NORMUON_TESTS_TESTING_FORWARDING_BACKEND_H_
