"""normuon: Python front end of the normuon runtime (the NorMuon optimizer family in C++/CUDA).

The runtime is libnormuon.so, reached through its C API with ctypes (`normuon._capi`); nothing
is compiled for Python. `normuon.torch.NorMuon` is a torch.optim.Optimizer over it.

Five lines that swap it into a PyTorch training loop:

    from normuon.torch import NorMuon
    opt = NorMuon(model.named_parameters(), lr=0.02, weight_decay=0.01)  # 2-D+: NorMuon; rest AdamW
    loss.backward()
    opt.step()
    opt.zero_grad()

(`model.parameters()` works too; named parameters give the runtime's error messages their
names. Group dicts with `use_muon=True/False` work as in the official
SingleDeviceNorMuonWithAuxAdam.)

`NorMuon(..., overlap_backward=True)` starts each matrix's optimizer work from a gradient hook
during backward (normuon_grad_ready), bitwise the same result; with gradient accumulation, run
all but the last backward inside `with opt.no_overlap():`, and leave gradients unchanged between
backward and step (see normuon.torch, "Overlap with the backward pass").

The library is found via $NORMUON_LIBRARY, then next to this package, then the repository's
bazel-bin/ (`bazel build //:libnormuon.so`). Importing `normuon` does not import torch or load
the library; `normuon.torch` imports torch, and the library loads on first use.
"""

from ._capi import (  # noqa: F401
    NorMuonError,
    InvalidArgumentError,
    InvalidHandleError,
    InvalidStateError,
    UnsupportedError,
    OutOfMemoryError,
    CudaError,
    CommError,
    NonFiniteError,
    NorMuonTimeoutError,
    InternalError,
    Status,
    library_path,
    version,
    has_cuda,
)

__all__ = [
    "NorMuonError", "InvalidArgumentError", "InvalidHandleError", "InvalidStateError",
    "UnsupportedError", "OutOfMemoryError", "CudaError", "CommError", "NonFiniteError",
    "NorMuonTimeoutError", "InternalError", "Status", "library_path", "version", "has_cuda",
]
