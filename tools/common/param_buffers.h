// param_buffers.h: one parameter's fp32 parameter and gradient buffers as the tools hand them to
// the C API: host memory for the CPU backend, device memory for the CUDA backend. Header-only:
// the device half is compiled where the including target defines NORMUON_WITH_CUDA (and links
// the CUDA runtime), so //tools:tool_common itself never does.
#ifndef NORMUON_TOOLS_COMMON_PARAM_BUFFERS_H_
#define NORMUON_TOOLS_COMMON_PARAM_BUFFERS_H_

#include <cstdint>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "normuon/normuon.h"

#ifdef NORMUON_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace normuon_tools {

class ParamBuffers {
 public:
  // n floats each (at least one, so that a rank without rows still has valid pointers): host
  // memory for NORMUON_BACKEND_CPU, cudaMalloc on `device` for NORMUON_BACKEND_CUDA. The
  // gradient starts at zero.
  static absl::StatusOr<std::unique_ptr<ParamBuffers>> Make(normuon_backend_t backend,
                                                            int device, int64_t n) {
    std::unique_ptr<ParamBuffers> b(new ParamBuffers(n < 1 ? 1 : n));
    if (backend != NORMUON_BACKEND_CUDA) {
      b->host_param_ = std::make_unique<float[]>(b->n_);
      b->host_grad_ = std::make_unique<float[]>(b->n_);  // value-initialized: zeros
      b->param_ = b->host_param_.get();
      b->grad_ = b->host_grad_.get();
      return b;
    }
#ifdef NORMUON_WITH_CUDA
    b->device_ = true;
    const size_t bytes = static_cast<size_t>(b->n_) * sizeof(float);
    absl::Status st = Check(cudaSetDevice(device), "cudaSetDevice");
    if (st.ok()) st = Check(cudaMalloc(reinterpret_cast<void**>(&b->param_), bytes), "cudaMalloc");
    if (st.ok()) st = Check(cudaMalloc(reinterpret_cast<void**>(&b->grad_), bytes), "cudaMalloc");
    if (st.ok()) st = Check(cudaMemset(b->grad_, 0, bytes), "cudaMemset");
    if (!st.ok()) return st;
    return b;
#else
    (void)device;
    return absl::UnimplementedError(
        "this build of the tools has no CUDA support (built without NORMUON_WITH_CUDA)");
#endif
  }

  ~ParamBuffers() {
#ifdef NORMUON_WITH_CUDA
    if (device_) {
      if (param_ != nullptr) cudaFree(param_);
      if (grad_ != nullptr) cudaFree(grad_);
    }
#endif
  }
  ParamBuffers(const ParamBuffers&) = delete;
  ParamBuffers& operator=(const ParamBuffers&) = delete;

  float* param() const { return param_; }
  float* grad() const { return grad_; }
  bool on_device() const { return device_; }

  // Copies `count` (<= the size) floats of host memory into the parameter or the gradient (a
  // no-op when src is the host gradient itself), or the parameter out to host memory. On the
  // device, plain cudaMemcpy: ordered after a step on the legacy default stream.
  absl::Status SetParam(const float* src, int64_t count) { return In(param_, src, count); }
  absl::Status SetGrad(const float* src, int64_t count) { return In(grad_, src, count); }
  absl::Status GetParam(float* dst, int64_t count) const {
    const size_t bytes = static_cast<size_t>(count) * sizeof(float);
    if (!device_) {
      std::memcpy(dst, param_, bytes);
      return absl::OkStatus();
    }
#ifdef NORMUON_WITH_CUDA
    return Check(cudaMemcpy(dst, param_, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (param out)");
#else
    return absl::OkStatus();
#endif
  }

 private:
  explicit ParamBuffers(int64_t n) : n_(n) {}

  absl::Status In(float* dst, const float* src, int64_t count) {
    const size_t bytes = static_cast<size_t>(count) * sizeof(float);
    if (!device_) {
      if (src != dst) std::memcpy(dst, src, bytes);
      return absl::OkStatus();
    }
#ifdef NORMUON_WITH_CUDA
    return Check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (in)");
#else
    return absl::OkStatus();
#endif
  }

#ifdef NORMUON_WITH_CUDA
  static absl::Status Check(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return absl::OkStatus();
    return absl::InternalError(
        absl::StrCat(what, " failed: ", cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
  }
#endif

  int64_t n_;
  bool device_ = false;
  float* param_ = nullptr;
  float* grad_ = nullptr;
  std::unique_ptr<float[]> host_param_, host_grad_;
};

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_COMMON_PARAM_BUFFERS_H_
