"""normuon.torch: a torch.optim.Optimizer that runs the NorMuon step in the normuon runtime.

`NorMuon(params_or_groups, lr=0.02, momentum=0.95, beta2=0.95, weight_decay=0, ...)` is a
drop-in replacement for the official `SingleDeviceNorMuonWithAuxAdam` (same group keys, names
and defaults). The arithmetic happens in libnormuon.so, reached through its C API with ctypes
(`normuon._capi`): no compiled extension, so any PyTorch that has `Tensor.data_ptr()` (and, for
CUDA, `torch.cuda.current_stream().cuda_stream`) works.

Groups
  * matrix groups (`use_muon=True`): NorMuon. Keys and defaults: lr 0.02, momentum 0.95,
    beta2 0.95, weight_decay 0. Every parameter must have 2 or more dimensions; a tensor with
    more than 2 (a convolution kernel) is treated as the matrix (shape[0], prod(shape[1:])).
  * AdamW groups (`use_muon=False`): the runtime's AdamW (bias-corrected, decoupled weight
    decay). Keys and defaults: lr 3e-4, betas (0.9, 0.95), eps 1e-10, weight_decay 0.
  * Plain parameters (an iterable of tensors, or of (name, tensor) pairs as given by
    `module.named_parameters()`) are split: tensors with ndim >= 2 go to one matrix group with
    the constructor's lr/momentum/beta2/weight_decay, the others (biases, norm gains, scalars)
    to one AdamW group with adamw_lr/adamw_betas/adamw_eps/adamw_weight_decay. Embeddings and
    output heads are 2-D: put them in an AdamW group yourself if you want AdamW for them (as the
    official recipe does).
  * A group dict without `use_muon` is a matrix group if all its tensors have ndim >= 2 and an
    AdamW group if none has; mixed groups must say which.

  lr and weight_decay of every group are pushed to the runtime before every step, so LR
  schedulers (and hand edits of group["lr"]) work. momentum, beta2, betas and eps are fixed at
  the first step: changing them afterwards raises (OneCycleLR: pass cycle_momentum=False).

Runtime switches (constructor keywords, one value for the whole optimizer): variant ("normuon"
official, "normuon_paper", "muon"), ns_dtype ("default": fp32 on CPU, bf16 on CUDA; "fp32";
"bf16"), ns_steps (5), nesterov (True), owner_policy ("round_robin", "cost_balanced"; matters
only when sharded), schedule ("sequential", "per_matrix", "bucketed"; default "sequential", or
"bucketed" with overlap_backward) and bucket_bytes (how a step pipelines its buckets and
overlaps communication with compute; same results), check_finite (False; True: a NaN/Inf
gradient skips the whole step and leaves parameters and state untouched; `step_result()`
reports it), comm_timeout (seconds bounding each collective of a sharded step: NCCL, or gloo
on CPU), overlap_backward (False; see below), shards and process_group (manual row sharding
without DTensor; see "Parameters and devices").

Overlap with the backward pass (overlap_backward=True)
  A matrix's momentum, Newton-Schulz and row statistics (and, sharded, its exchanges) depend
  only on its gradient, so they can run while backward still computes earlier layers
  (normuon_grad_ready). With overlap_backward=True every matrix parameter gets a hook that
  fires once its gradient is accumulated into .grad (Tensor.register_post_accumulate_grad_hook
  on PyTorch >= 2.1, a post-hook on the parameter's AccumulateGrad node before, e.g. Debian's
  1.13); it binds the parameter to its memory and its .grad (normuon_bind) and marks it ready.
  On CPU the runtime's worker threads start a bucket as soon as all its matrices are marked
  (buckets in reverse registration order: the order backward finishes them); step() binds the
  other parameters, does the rest and the lr/wd-dependent commit. Results are bitwise
  identical to overlap_backward=False on CPU.
  * Only the pipelined schedules start work early: schedule defaults to "bucketed" with
    overlap ("per_matrix" works too; "sequential" waits for step). A bucket starts when its
    last matrix is marked, so smaller bucket_bytes start earlier.
  * The hooks are installed at construction (a parameter that does not require grad then gets
    none); the runtime is built by the first step, so the first step has no overlap.
  * Gradient accumulation: a parameter can be marked once per step, so only the last backward
    pass before step() may mark. Run the others inside `with opt.no_overlap():` (as DDP's
    no_sync()), or set `opt.overlap_backward_enabled = False` for them. A hook firing twice in
    one step makes step() raise.
  * Gradients must not change between backward and step: the runtime reads them from their
    hook on. Gradient clipping, unscaling, any other write to a marked .grad or its
    replacement makes step() raise (caught by the tensor's version counter); so does a marked
    matrix whose memory moved after its hook (the runtime holds that memory until step; the
    other parameters are bound at step and may move). Edit gradients with
    overlap_backward=False.
  * Each such error, and an error inside a hook (a non-contiguous gradient, a failed C call:
    kept and raised by step()), discards the begun step: parameters and optimizer state are
    unchanged, .grad is kept, and a step() after fixing things runs without overlap.
    zero_grad() discards a begun step that step() never took (backward, then no step). The
    runtime ends a begun step only by running it, so a discard runs one step (the unmarked
    parameters bound to zeroed scratch memory without gradient, the marked ones to what their
    hooks bound, kept alive) and writes the saved state and parameters back; step_result()
    does not count it, last_step_profile() and last_step_trace() then describe it.
  * Cost: none in memory or copies. The runtime reads each gradient where autograd left it:
    a matrix is bound to its .grad in its own hook (normuon_bind is accepted inside a begun
    step for a parameter not marked yet), the other parameters at step, as without overlap.
    Between its hook and step the optimizer keeps a reference to each marked .grad (the
    tensor autograd made, no copy).
  * A missing gradient (.grad None at step) means "zero gradient and no weight decay", as
    without overlap: such a parameter has no hook call, and step binds it without gradient
    (exact, also in a group with weight decay).

Parameters and devices
  * All parameters live on one device: CPU tensors run on the runtime's CPU backend, CUDA
    tensors on its CUDA backend on `torch.cuda.current_stream()` (the step is queued, not
    waited for). Supported dtypes: float32 and bfloat16 (bf16 parameters are updated in fp32 and
    rounded once; fp32 master weights are recommended). float16, float64, complex and integer
    tensors are refused.
  * Parameters and gradients must be contiguous. Their buffers may move between steps (FSDP2,
    zero_grad(set_to_none=True)): every step re-binds param.data_ptr() and grad.data_ptr()
    (with overlap_backward, a matrix's gradient hook binds it, step the rest); a parameter
    whose .grad is None gets a zero gradient and no weight decay, as in the official code.
  * Parameters are registered with the runtime at the first step (or at load_state_dict), in
    group order; their shapes, dtypes and device are then fixed. Names: the names given with
    (name, tensor) pairs, else "param.{i}" with i the parameter's index in state_dict().
  * DTensors (FSDP2, tensor parallel x FSDP, HSDP): each parameter's placements give the
    rectangle this process holds, by DTensor's rule (mesh dims in order; Shard(d) cuts the
    range held so far along dim d into torch.chunk pieces of ceil(size/n); Replicate keeps it),
    registered with the global shape. The mesh dims with a Shard placement make the runtime's
    shard group; processes that differ only on Replicate dims are replicas, each running its
    own runtime. FSDP2's _StridedShard (a dim tensor parallelism shards first) is mapped by
    torch's rule; several row ranges on one process become several pieces (desc.pieces). All
    parameters of one NorMuon need the same shard group (else ValueError at the first step
    naming two of them). Partial, an uneven _StridedShard and Shard(d >= 1) of a tensor of more
    than 2 dims raise NotImplementedError. World size 1 needs no communicator; larger
    worlds use, for CUDA tensors, an NCCL communicator whose id is broadcast over the default
    torch.distributed group (the shard group must be the whole group), and for CPU tensors the
    torch.distributed communicator below over the shard group.
  * Manual row shards (no DTensor, e.g. Debian's PyTorch 1.13): `shards={param or name:
    (global_shape, row_begin)}` (or {"global_shape": ..., "row_begin": ...}) says, for every
    parameter, that the local tensor is rows [row_begin, row_begin + local.shape[0]) of a
    tensor of global_shape (other dims equal; 0 local rows allowed) on the ranks of
    `process_group` (default: the default group). Every parameter needs an entry; each entry is
    checked at construction (a missing or unknown entry, an unknown key, a bad global_shape or
    row_begin raise ValueError/TypeError naming it), and the runtime checks at the first step
    that the ranks' blocks tile the rows. Gradients are this rank's rows of the reduced full
    gradient (the trainer reduce-scatters).
    Rectangles (tensor parallel x FSDP): (global_shape, row_begin, col_begin) or the dict with
    "col_begin" says that the contiguous 2-D local tensor is rows [row_begin, +shape[0]) x
    columns [col_begin, +shape[1]) of a 2-D global_shape (ld = its column count); the ranks'
    rectangles must tile the matrix (checked at the first step). AdamW parameters are held as
    whole rows. The dict key "num_heads" asks for per-head orthogonalization (num_heads equal
    row blocks, the C API's desc.num_heads). Several rectangles of one matrix on this rank
    (a TP rank's q, k and v rows of a fused QKV that is not interleaved; FSDP2's strided rows):
    {"global_shape": (m, n), "pieces": [(row_begin, row_count, col_begin), ...]} says that the
    contiguous 2-D local tensor is those rectangles stacked along dim 0, in list order, each
    row_count rows x the local tensor's columns from col_begin (the C API's desc.pieces; the
    optimizer state follows the same order). Replicas (HSDP): ranks holding the same pieces
    each run their own NorMuon over the process_group of their shard group and compute the
    same bits, given the same (replica-averaged) gradients.
  * torch.distributed communicator (CPU, sharded): normuon._dist_comm, the C API's custom ops
    with callbacks that call torch.distributed on a private gloo group over the same ranks
    (dist.new_group at the first step, a collective of every rank of the default group), so
    the runtime's collectives never interleave with the trainer's own. Bitwise the same result
    as one process. Each collective is bounded by comm_timeout: a dead peer makes step() raise
    CommError at once, a hung one NorMuonTimeoutError after comm_timeout; nothing changes on
    the surviving ranks and the communicator stays failed (later steps raise at once).

Misuse (a tensor with fewer than 2 dims in a matrix group, a non-contiguous tensor, tensors on
different devices, a shape/dtype/device change after the first step, an unsupported dtype, a
changed momentum) raises ValueError/TypeError/RuntimeError before anything is written: no
parameter, no optimizer state and no step count changes. Failures of the C API raise
`normuon.NorMuonError` (a subclass per status) carrying the runtime's own message.

state_dict() has the standard torch layout: {"state": {index: {...}}, "param_groups": [...]}
with indices counted over the groups in order. Matrix state: "momentum_buffer" (the
parameter's local shape) and "second_momentum_buffer" (rows x 1; absent for variant "muon");
AdamW state: "exp_avg", "exp_avg_sq" (the parameter's shape) and "step" (int64 scalar tensor).
State tensors are fp32 copies on the parameter's device (DTensors for DTensor parameters);
`optimizer.state` itself stays empty, the runtime owns the live state.
"""

import contextlib
import ctypes
import math
import sys
import threading
import weakref
from collections import namedtuple

import torch

from . import _capi
from ._capi import NorMuonError  # noqa: F401  (re-exported)

__all__ = ["NorMuon", "StepResult", "NorMuonError"]

_MATRIX_KEYS = ("lr", "momentum", "beta2", "weight_decay")
_ADAMW_KEYS = ("lr", "betas", "eps", "weight_decay")
# Keys other code is known to add to groups; accepted, ignored by the runtime.
_TOLERATED_KEYS = {"initial_lr", "name"}

_VARIANTS = {
    "normuon": _capi.Variant.NORMUON,
    "normuon_paper": _capi.Variant.NORMUON_PAPER,
    "muon": _capi.Variant.MUON,
}
_NS_DTYPES = {"default": _capi.NsDType.DEFAULT, "fp32": _capi.NsDType.FP32,
              "bf16": _capi.NsDType.BF16, "fp16": _capi.NsDType.FP16}
_NS_METHODS = {"standard": _capi.NsMethod.STANDARD, "gram": _capi.NsMethod.GRAM}
_OWNER_POLICIES = {"round_robin": _capi.OwnerPolicy.ROUND_ROBIN,
                   "cost_balanced": _capi.OwnerPolicy.COST_BALANCED}
_SCHEDULES = {"sequential": _capi.Schedule.SEQUENTIAL, "per_matrix": _capi.Schedule.PER_MATRIX,
              "bucketed": _capi.Schedule.BUCKETED}
_DTYPES = {torch.float32: _capi.DType.FP32, torch.bfloat16: _capi.DType.BF16}
_MATRIX_EPS = 1e-10  # sqrt(v) + eps and the norm restore (normuon_config_t.eps default)
# PyTorch >= 2.1 has Tensor.register_post_accumulate_grad_hook; older versions (Debian's 1.13)
# get the same moment from a post-hook on the parameter's AccumulateGrad node.
_POST_ACCUMULATE_HOOKS = hasattr(torch.Tensor, "register_post_accumulate_grad_hook")

StepResult = namedtuple("StepResult",
                        "steps_taken steps_skipped last_skipped nonfinite_param ns_fallbacks",
                        defaults=(0,))
StepResult.__doc__ = """Outcome of the steps so far (normuon_step_result): counts of committed
and skipped steps, whether the last one was skipped, the name of the first parameter with a
non-finite gradient in it (None if none), and (ns_method="gram") how many Gram Newton-Schulz
results this rank redid with the standard iteration because they diverged."""


# --- tensors: plain or DTensor ------------------------------------------------------------


def _is_dtensor(t):
    """Duck-typed DTensor check (torch.distributed.tensor in 2.4+, ._tensor before; absent in
    old versions): the class is named DTensor and has to_local/placements/device_mesh."""
    return (any(c.__name__ == "DTensor" for c in type(t).__mro__)
            and hasattr(t, "to_local") and hasattr(t, "placements")
            and hasattr(t, "device_mesh"))


def _local(t):
    """The tensor whose memory this rank holds: DTensor -> its local shard, else t itself."""
    if t is None:
        return None
    return t.to_local() if _is_dtensor(t) else t


def _fsdp_rows(global_rows, world, rank):
    """(row_begin, row_count) of `rank` in FSDP2's dim-0 layout: torch.chunk into ceil(m/P)-row
    chunks, so the last ranks may be short or empty."""
    chunk = -(-global_rows // world)
    begin = min(rank * chunk, global_rows)
    return begin, max(0, min(chunk, global_rows - begin))


def _placement(pl):
    """("shard", dim, None), ("strided", dim, split_factor), ("replicate", None, None) or (the
    placement's class name, None, None) for Partial and anything else (duck-typed: DTensor's
    Shard has is_shard() and .dim, Replicate has is_replicate(); FSDP2's _StridedShard is a Shard
    with a split_factor)."""
    name = type(pl).__name__
    if name == "_StridedShard" or hasattr(pl, "split_factor"):
        return "strided", int(pl.dim), int(pl.split_factor)
    if callable(getattr(pl, "is_shard", None)) and pl.is_shard():
        return "shard", int(pl.dim), None
    if callable(getattr(pl, "is_replicate", None)) and pl.is_replicate():
        return "replicate", None, None
    return name, None, None


def _mesh_shape_and_coordinate(mesh, who):
    """The mesh's shape (a tuple) and this process's coordinate in it (a tuple)."""
    shape = tuple(int(s) for s in mesh.mesh.shape)
    coord = mesh.get_coordinate()
    if coord is None:
        raise ValueError(f"NorMuon: {who} is a DTensor on a device mesh that does not include "
                         f"this process")
    return shape, tuple(int(c) for c in coord)


def _runs(indices):
    """[(first, count), ...]: the runs of consecutive integers in `indices`, in their order."""
    out = []
    for i in indices:
        if out and out[-1][0] + out[-1][1] == i:
            out[-1][1] += 1
        else:
            out.append([i, 1])
    return [tuple(r) for r in out]


def _dtensor_piece(global_shape, mesh_shape, coord, placements, who):
    """What a DTensor's local tensor holds of the tensor viewed as rows = shape[0] x cols =
    prod(shape[1:]): (row_runs, (col_begin, col_count), shard_dims), row_runs the runs of
    consecutive global rows in local order ([(row_begin, row_count), ...]; several when the
    local rows are not one range, e.g. under _StridedShard).
    DTensor's rule, mesh dims in order, on the indices held so far along tensor dim d:
    Shard(d) cuts them into mesh_shape[i] torch.chunk pieces (ceil(size / n) each, the last ones
    short or empty) and keeps piece coord[i]; _StridedShard(d, split_factor=f) (FSDP2 over a dim
    tensor parallelism already shards) cuts them into n * f equal chunks and keeps chunks
    coord[i] + j * n for j < f, concatenated; Replicate keeps them (the ranks that differ only
    there hold the same part: replicas). shard_dims: the mesh dims with a Shard placement.
    Raises NotImplementedError naming `who` for Partial (or any other placement), an uneven
    _StridedShard (which torch refuses too), Shard(d >= 1) of a tensor with more than 2 dims, and
    columns that are not one range."""
    if len(placements) != len(mesh_shape) or len(coord) != len(mesh_shape):
        raise ValueError(f"NorMuon: {who}: {len(placements)} placements for a "
                         f"{len(mesh_shape)}-D mesh")
    ndim = len(global_shape)
    rows = int(global_shape[0]) if ndim else 1
    cols = math.prod(global_shape[1:]) if ndim > 1 else 1
    held = [list(range(rows)), list(range(cols))]  # global indices along rows and along cols
    shard_dims = []
    for i, pl in enumerate(placements):
        kind, dim, factor = _placement(pl)
        if kind == "replicate":
            continue
        if kind not in ("shard", "strided"):
            raise NotImplementedError(
                f"NorMuon: {who} is a DTensor placed as {pl} on mesh dim {i}; supported "
                f"placements are Shard(0), Shard(1) of a 2-D tensor, FSDP2's _StridedShard on "
                f"those, and Replicate (a {kind} placement is a partial value, not a part)")
        if dim < 0:
            dim += ndim
        if dim < 0 or dim >= max(ndim, 1) or (dim >= 1 and ndim != 2):
            raise NotImplementedError(
                f"NorMuon: {who} is a DTensor of {ndim} dims placed as {pl} on mesh dim {i}; "
                f"only Shard(0), and Shard(1) of a 2-D tensor, map onto rectangles")
        n, c, idx = mesh_shape[i], coord[i], held[dim]
        if kind == "shard":
            chunk = -(-len(idx) // n)
            held[dim] = idx[min(c * chunk, len(idx)):min((c + 1) * chunk, len(idx))]
        else:
            total = n * factor
            if len(idx) % total:
                raise NotImplementedError(
                    f"NorMuon: {who} is a DTensor placed as {pl} on mesh dim {i} over "
                    f"{len(idx)} indices, not a multiple of {n} x split_factor {factor} (uneven "
                    f"strided sharding, which torch does not support either)")
            size = len(idx) // total
            held[dim] = [x for j in range(factor)
                         for x in idx[(c + j * n) * size:(c + j * n + 1) * size]]
        shard_dims.append(i)
    col_runs = _runs(held[1])
    if len(col_runs) > 1:
        raise NotImplementedError(f"NorMuon: {who}: the placements {tuple(placements)} give this "
                                  f"process columns that are not one range")
    col_begin, col_count = col_runs[0] if col_runs else (0, 0)
    return _runs(held[0]), (col_begin, col_count), tuple(shard_dims)


def _replicate_like(p):
    """A Replicate placement for DTensor p: torch's, or (a DTensor stand-in without torch's
    DTensor) the one of the module that defines p's class."""
    import importlib
    for mod in ("torch.distributed.tensor", "torch.distributed._tensor"):
        try:
            return importlib.import_module(mod).Replicate()
        except (ImportError, AttributeError):
            pass
    return sys.modules[type(p).__module__].Replicate()


def _shard_group_ranks(mesh, shard_dims, coord):
    """The global ranks of the mesh that share this process's coordinate on every mesh dim
    outside shard_dims (its shard group: one runtime; the other dims are replicas), in
    row-major order of their coordinates on shard_dims."""
    ranks = mesh.mesh
    index = tuple(slice(None) if i in shard_dims else c for i, c in enumerate(coord))
    return [int(r) for r in ranks[index].reshape(-1).tolist()]


class _Layout(namedtuple("_Layout", "matrix rows cols row_begin row_count local_shape dtype "
                                     "device world col_begin col_count num_heads pieces mesh")):
    """How one parameter is registered: global rows x cols, this rank's rectangle (rows
    [row_begin, +row_count) x columns [col_begin, +col_count)), its local shape, dtype and
    device, the world size of its sharding (1 for plain tensors) and num_heads (0 = none).
    pieces: () or ((row_begin, row_count, col_begin, col_count), ...), several rectangles
    stacked along dim 0 of the local tensor (row_count is then their rows in all). mesh: for a
    DTensor, (the global ranks of its shard group, its shard mesh dims), else None."""


def _piece_array(layout, param_ptr=None, grad_ptr=None):
    """The C API's normuon_piece_t list of a layout with pieces, pointing into the local
    tensors' memory (stacked along dim 0) when given."""
    arr = (_capi.Piece * len(layout.pieces))()
    size = torch.empty((), dtype=layout.dtype).element_size()
    at = 0
    for j, (rb, rc, cb, cc) in enumerate(layout.pieces):
        arr[j].row_begin, arr[j].row_count, arr[j].col_begin, arr[j].col_count = rb, rc, cb, cc
        arr[j].ld = cc
        arr[j].param = param_ptr + at * size if (param_ptr and rc) else None
        arr[j].grad = grad_ptr + at * size if (grad_ptr and rc) else None
        at += rc * cc
    return arr


def _layout(p, matrix, who, shard=None):
    """The layout of parameter p (checked: dtype, dims, sharding, contiguity); `shard`: its
    RowShard from the constructor's `shards` (p is then the local rows). Raises
    ValueError/TypeError/NotImplementedError naming `who`; changes nothing."""
    if p.is_complex() or p.dtype not in _DTYPES:
        raise TypeError(f"NorMuon: {who} has dtype {p.dtype}; only torch.float32 and "
                        f"torch.bfloat16 parameters are supported")
    if getattr(p, "is_sparse", False) or p.layout != torch.strided:
        raise TypeError(f"NorMuon: {who} has layout {p.layout}; only dense (strided) tensors "
                        f"are supported")
    shape = tuple(p.shape) if shard is None else shard.global_shape
    if shard is not None and shard.pieces is not None:
        if not matrix:
            raise ValueError(f"NorMuon: {who}: shards[...].pieces is for matrices "
                             f"(use_muon=True); an AdamW parameter is held as whole rows")
        if len(shape) != 2 or p.dim() != 2:
            raise ValueError(f"NorMuon: {who}: shards[...].pieces needs a 2-D global_shape and "
                             f"a 2-D local tensor; got global_shape {list(shape)}, local shape "
                             f"{list(p.shape)}")
        width = int(p.shape[1])
        for j, (rb, rc, cb) in enumerate(shard.pieces):
            if rb + rc > shape[0] or cb + width > shape[1]:
                raise ValueError(f"NorMuon: {who}: shards[...].pieces[{j}] rows [{rb}, "
                                 f"{rb + rc}) x columns [{cb}, {cb + width}) exceed "
                                 f"global_shape {list(shape)}")
        if sum(q[1] for q in shard.pieces) != p.shape[0]:
            raise ValueError(f"NorMuon: {who}: shards[...].pieces hold "
                             f"{sum(q[1] for q in shard.pieces)} rows in all, but the local "
                             f"tensor has {p.shape[0]} (the pieces are stacked along dim 0)")
    elif shard is not None:
        if _is_dtensor(p):
            raise ValueError(f"NorMuon: {who} is a DTensor and has an entry in shards; a "
                             f"DTensor says its own sharding: leave it out of shards")
        if shard.col_begin is not None:
            if len(shape) != 2 or p.dim() != 2:
                raise ValueError(f"NorMuon: {who}: shards[...].col_begin needs a 2-D "
                                 f"global_shape and a 2-D local tensor (a rectangle); got "
                                 f"global_shape {list(shape)}, local shape {list(p.shape)}")
            if not matrix and (shard.col_begin != 0 or p.shape[1] != shape[1]):
                raise ValueError(f"NorMuon: {who} is an AdamW parameter (use_muon=False) and "
                                 f"must be held as whole rows: shards[...].col_begin "
                                 f"{shard.col_begin} with {p.shape[1]} local columns of "
                                 f"{shape[1]}")
            if shard.col_begin >= shape[1]:
                raise ValueError(f"NorMuon: {who}: shards[...].col_begin {shard.col_begin} is "
                                 f"out of range for global_shape[1] {shape[1]}")
            if shard.col_begin + p.shape[1] > shape[1]:
                raise ValueError(f"NorMuon: {who}: shards[...].col_begin {shard.col_begin} + "
                                 f"its {p.shape[1]} local columns > global_shape[1] "
                                 f"{shape[1]} (the rectangle exceeds the global shape)")
        elif p.dim() != len(shape) or tuple(p.shape[1:]) != shape[1:]:
            raise ValueError(f"NorMuon: {who} has local shape {list(p.shape)}, which is not "
                             f"a block of rows of shards[...].global_shape {list(shape)} (the "
                             f"same dims, all but the first equal; give col_begin for a "
                             f"rectangle of a 2-D tensor)")
        if shard.num_heads and not matrix:
            raise ValueError(f"NorMuon: {who}: shards[...].num_heads is for matrices "
                             f"(use_muon=True); {who} is an AdamW parameter")
        if shard.num_heads and shape[0] % shard.num_heads:
            raise ValueError(f"NorMuon: {who}: shards[...].num_heads {shard.num_heads} does "
                             f"not divide global_shape[0] {shape[0]}")
        if shard.row_begin + p.shape[0] > shape[0]:
            raise ValueError(f"NorMuon: {who}: shards[...].row_begin {shard.row_begin} + its "
                             f"{p.shape[0]} local rows > global_shape[0] {shape[0]}")
    if matrix and len(shape) < 2:
        raise ValueError(f"NorMuon: {who} has shape {list(shape)} ({len(shape)}-D) but is in a "
                         f"matrix group (use_muon=True); matrix groups take tensors with 2 or "
                         f"more dims: put it in a group with use_muon=False (AdamW)")
    if any(s == 0 for s in shape):
        raise ValueError(f"NorMuon: {who} has shape {list(shape)} with no elements")
    rows = shape[0] if shape else 1
    cols = math.prod(shape[1:]) if len(shape) > 1 else 1
    world, begin, count = 1, 0, rows
    col_begin, col_count, heads, pieces = 0, cols, 0, ()
    mesh_key = None
    if _is_dtensor(p):
        mesh = p.device_mesh
        mesh_shape, coord = _mesh_shape_and_coordinate(mesh, who)
        row_runs, (col_begin, col_count), shard_dims = _dtensor_piece(
            shape, mesh_shape, coord, tuple(p.placements), who)
        count = sum(rc for _, rc in row_runs)
        begin = row_runs[0][0] if len(row_runs) == 1 else 0
        if count == 0 or col_count == 0:  # nothing here: an empty piece of every column
            begin, count, col_begin, col_count = min(begin, rows), 0, 0, cols
        if not matrix and (col_count != cols or len(row_runs) > 1):
            raise ValueError(f"NorMuon: {who} is an AdamW parameter (use_muon=False) placed as "
                             f"{tuple(p.placements)}: AdamW parameters are held as one range of "
                             f"whole rows (Shard(0) or Replicate on every mesh dim)")
        if len(row_runs) > 1:  # several row ranges, stacked along dim 0: desc.pieces
            pieces = tuple((rb, rc, col_begin, col_count) for rb, rc in row_runs)
        group = _shard_group_ranks(mesh, shard_dims, coord)
        world = len(group)
        mesh_key = (tuple(group), shard_dims)
    elif shard is not None:
        world, begin, count = shard.world, shard.row_begin, int(p.shape[0])
        heads = shard.num_heads
        if shard.col_begin is not None:
            col_begin, col_count = shard.col_begin, int(p.shape[1])
        if shard.pieces is not None:
            col_count = int(p.shape[1])
            pieces = tuple((rb, rc, cb, col_count) for rb, rc, cb in shard.pieces)
    local = _local(p)
    # (a rectangle's local shape was checked against global_shape above)
    if (not pieces and col_count == cols and not (mesh_key is not None and count == 0
                                                  and local.numel() == 0)
            and tuple(local.shape) != ((count,) + shape[1:] if shape else ())):
        raise ValueError(f"NorMuon: {who}: local shard shape {list(local.shape)} is not "
                         f"FSDP2's dim-0 chunk ({count} of {rows} rows from row {begin})")
    if mesh_key is not None and (col_count != cols or pieces) and not (
            local.numel() == 0 and count == 0) and (
            tuple(local.shape) != ((count, col_count) if len(shape) == 2
                                   else (count,) + shape[1:])):
        where = (f"rows [{begin}, +{count})" if not pieces else
                 "rows " + ", ".join(f"[{rb}, +{rc})" for rb, rc, _, _ in pieces))
        raise ValueError(f"NorMuon: {who}: local shard shape {list(local.shape)} is not the "
                         f"part its placements {tuple(p.placements)} give this process "
                         f"({where} x columns [{col_begin}, +{col_count}))")
    if not local.is_contiguous():
        raise ValueError(f"NorMuon: {who} is not contiguous (strides {list(local.stride())} "
                         f"for shape {list(local.shape)}); the runtime reads row-major memory: "
                         f"make the parameter contiguous before creating the optimizer")
    return _Layout(matrix, rows, cols, begin, count, tuple(local.shape), p.dtype,
                   local.device, world, col_begin, col_count, heads, pieces, mesh_key)


class RowShard(namedtuple("RowShard", "global_shape row_begin world col_begin num_heads pieces",
                          defaults=(None,))):
    """Which piece of which global tensor a local tensor holds (an entry of NorMuon's
    `shards`, normalized): rows [row_begin, row_begin + local.shape[0]) of a tensor of
    global_shape, on a process group of `world` ranks; with col_begin (not None) the local
    tensor is the rectangle of those rows x columns [col_begin, col_begin + local.shape[1]) of
    a 2-D global_shape. num_heads: per-head orthogonalization (0 = none). pieces: None, or
    ((row_begin, row_count, col_begin), ...) for several rectangles stacked along dim 0 of the
    local tensor (row_begin is then 0 and unused)."""


_SHARD_FIELDS = ("global_shape", "row_begin", "col_begin", "num_heads", "pieces")
_SHARD_REQUIRED = ("global_shape", "row_begin")


def _row_shard(spec, world, who):
    """Normalizes one entry of `shards` ((global_shape, row_begin) or a dict with those keys)
    into a RowShard. Raises TypeError/ValueError naming `who` and the field."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(_SHARD_FIELDS))
        if unknown:
            raise ValueError(f"NorMuon: {who}: shards[...] has unknown keys {unknown}; expected "
                             f"{list(_SHARD_FIELDS)}")
        if "pieces" in spec:
            return _pieces_shard(spec, world, who)
        missing = [k for k in _SHARD_REQUIRED if k not in spec]
        if missing:
            raise ValueError(f"NorMuon: {who}: shards[...] lacks {missing}")
        shape, begin = spec["global_shape"], spec["row_begin"]
        col, heads = spec.get("col_begin"), spec.get("num_heads", 0)
    elif isinstance(spec, (tuple, list)) and len(spec) in (2, 3):
        shape, begin = spec[0], spec[1]
        col, heads = (spec[2] if len(spec) == 3 else None), 0
    else:
        raise TypeError(f"NorMuon: {who}: shards[...] = {spec!r}; expected (global_shape, "
                        f"row_begin), (global_shape, row_begin, col_begin) or "
                        f"{{'global_shape': ..., 'row_begin': ..., 'col_begin': ..., "
                        f"'num_heads': ...}}")
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if (not isinstance(shape, (tuple, list)) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                       for d in shape)):
        raise ValueError(f"NorMuon: {who}: shards[...].global_shape = {shape!r}; expected a "
                         f"non-empty sequence of positive ints (a 0-dim parameter cannot be "
                         f"split by rows: make it shape [1])")
    if not isinstance(begin, int) or isinstance(begin, bool) or begin < 0:
        raise ValueError(f"NorMuon: {who}: shards[...].row_begin = {begin!r}; expected an int "
                         f">= 0")
    if col is not None and (not isinstance(col, int) or isinstance(col, bool) or col < 0):
        raise ValueError(f"NorMuon: {who}: shards[...].col_begin = {col!r}; expected an int "
                         f">= 0")
    if heads is None:
        heads = 0
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 0:
        raise ValueError(f"NorMuon: {who}: shards[...].num_heads = {heads!r}; expected an int "
                         f">= 0 (0 = none)")
    return RowShard(tuple(shape), begin, world, col, heads)


def _pieces_shard(spec, world, who):
    """A `shards` entry with "pieces" (several rectangles stacked along dim 0) as a RowShard.
    Raises ValueError naming `who` and the field."""
    other = sorted(set(spec) - {"global_shape", "pieces", "num_heads"})
    if other:
        raise ValueError(f"NorMuon: {who}: shards[...] has {other} together with 'pieces'; "
                         f"each piece gives its own rows and columns")
    base = _row_shard({"global_shape": spec.get("global_shape"), "row_begin": 0,
                       "col_begin": 0, "num_heads": spec.get("num_heads", 0)}, world, who)
    pieces = spec["pieces"]
    if not isinstance(pieces, (list, tuple)) or not pieces:
        raise ValueError(f"NorMuon: {who}: shards[...].pieces = {pieces!r}; expected a "
                         f"non-empty list of (row_begin, row_count, col_begin)")
    out = []
    for j, q in enumerate(pieces):
        if (not isinstance(q, (list, tuple)) or len(q) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                           for v in q)):
            raise ValueError(f"NorMuon: {who}: shards[...].pieces[{j}] = {q!r}; expected "
                             f"(row_begin, row_count, col_begin), ints >= 0")
        out.append(tuple(q))
    return base._replace(pieces=tuple(out))


def _checked_grad(p, lay, who):
    """The local gradient of p (None if p.grad is None), checked against p's layout: dense,
    same dtype, shape and device, contiguous. Raises TypeError/ValueError naming `who`."""
    gt = p.grad
    if gt is None:
        return None
    if gt.is_sparse or gt.layout != torch.strided:
        raise TypeError(f"NorMuon: {who} has a sparse gradient; not supported")
    grad = _local(gt)
    if grad.dtype != p.dtype:
        raise TypeError(f"NorMuon: {who}: gradient dtype {grad.dtype} differs "
                        f"from the parameter's {p.dtype}")
    if tuple(grad.shape) != lay.local_shape:
        raise ValueError(f"NorMuon: {who}: gradient shape {list(grad.shape)} "
                         f"differs from the parameter's {list(lay.local_shape)}")
    if grad.device != lay.device:
        raise ValueError(f"NorMuon: {who}: gradient on {grad.device}, parameter "
                         f"on {lay.device}")
    if not grad.is_contiguous():
        raise ValueError(f"NorMuon: {who}: gradient is not contiguous (strides "
                         f"{list(grad.stride())}); the runtime reads row-major "
                         f"memory")
    return grad


def _state_numel(layout, kind, variant):
    """Floats in one state buffer, 0 if it does not apply: the runtime's own rule
    (normuon_param_state_size, the same as normuon_state_size once registered)."""
    if kind == _capi.StateKind.STEP:
        return 0
    lib = _capi.lib()
    cfg = _capi.Config.defaults()
    cfg.variant = _VARIANTS[variant]
    desc = _capi.ParamDesc.defaults()
    desc.name = b"state"
    desc.rows, desc.cols = layout.rows, layout.cols
    pieces = None
    if layout.pieces:
        pieces = _piece_array(layout)
        desc.pieces = ctypes.cast(pieces, ctypes.c_void_p)
        desc.num_pieces = len(layout.pieces)
    else:
        desc.row_begin, desc.row_count = layout.row_begin, layout.row_count
        if layout.col_count != layout.cols:
            desc.col_begin, desc.col_count = layout.col_begin, layout.col_count
    nbytes = ctypes.c_uint64()
    _capi.check(lib.normuon_param_state_size(ctypes.byref(cfg), ctypes.byref(desc),
                                             1 if layout.matrix else 0, int(kind),
                                             ctypes.byref(nbytes)),
                0, "normuon_param_state_size")
    return nbytes.value // 4


# state_dict key -> the runtime's state kind
_MATRIX_STATE = {
    "momentum_buffer": _capi.StateKind.MOMENTUM,
    "second_momentum_buffer": _capi.StateKind.SECOND_MOMENT,
}
_ADAMW_STATE = {
    "exp_avg": _capi.StateKind.EXP_AVG,
    "exp_avg_sq": _capi.StateKind.EXP_AVG_SQ,
}


def _state_shape(layout, kind):
    if kind == _capi.StateKind.SECOND_MOMENT:
        return (layout.row_count, 1)
    return layout.local_shape


def _destroy_runtime(rt):
    try:
        _capi.lib().normuon_destroy(ctypes.c_uint64(rt))
    except Exception:  # interpreter shutdown: nothing left to report to
        pass


def _remove_handles(hooks):
    for h in hooks:
        (h[1] if isinstance(h, tuple) else h).remove()


class _PendingStep:
    """What the gradient hooks of overlap_backward did since the last step."""

    __slots__ = ("begun", "marked", "errors", "params")

    def __init__(self):
        self.begun = False  # a normuon_grad_ready succeeded: the runtime's step has begun
        # runtime index -> (the .grad tensor bound and marked in its hook, its _version then);
        # keeps the gradient memory the runtime reads alive until step (or the discard).
        self.marked = {}
        self.errors = []    # exceptions from the hooks, raised by the next step()
        # runtime index -> alias of the parameter memory its hook bound (alive), marked only
        self.params = {}

    def active(self):
        return self.begun or bool(self.errors)


class _Registered:
    """One registered parameter: the tensor, its runtime index, group and layout."""

    __slots__ = ("param", "index", "group", "layout", "name")

    def __init__(self, param, index, group, layout, name):
        self.param, self.index, self.group, self.layout, self.name = (
            param, index, group, layout, name)


class NorMuon(torch.optim.Optimizer):
    """NorMuon for matrices and AdamW for the rest, run by the normuon runtime.

    Args:
      params: an iterable of tensors or of (name, tensor) pairs (split by ndim, see the module
        docstring), or of group dicts with "params" and optionally "use_muon" and hyper-
        parameters (the keys of the official SingleDeviceNorMuonWithAuxAdam).
      lr, momentum, beta2, weight_decay: defaults of matrix groups (0.02, 0.95, 0.95, 0).
      adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: defaults of AdamW groups
        (3e-4, (0.9, 0.95), 1e-10, 0).
      variant: "normuon" (official), "normuon_paper" or "muon".
      ns_dtype: "default" (fp32 on CPU, bf16 on CUDA), "fp32", "bf16" or "fp16" (CUDA only).
      ns_steps: Newton-Schulz iterations (5). nesterov: True.
      ns_method: "standard" (the official numerics) or "gram" (Gram Newton-Schulz: the same map
        with fewer FLOPs on rectangular matrices; README, "Gram Newton-Schulz").
      ns_restarts: with "gram", the 0-based iterations to restart before (a list), or None for
        the library's measured default.
      ns_symmetric_products: with "gram" on CUDA, compute the products known to be symmetric
        over their lower-triangle tiles only (config.ns_symmetric_products; not yet measured on
        a GPU). False (default): dense products. The CPU backend ignores it (it always forms
        one triangle where that measured faster).
      owner_policy: "round_robin" or "cost_balanced" (which rank orthogonalizes each matrix).
      schedule: "sequential", "per_matrix" or "bucketed" (how a step pipelines its buckets;
        same result); None (default): "bucketed" with overlap_backward, else "sequential".
        bucket_bytes: bucket size of "bucketed" (None: the library's default, 32 MiB).
      check_finite: skip a step whose gradients hold NaN/Inf (see step_result()).
      comm_timeout: seconds that bound each collective of a sharded step (NCCL, or gloo on
        CPU).
      overlap_backward: start each matrix's work from a hook once its gradient is
        accumulated, during backward (normuon_grad_ready; module docstring, "Overlap with the
        backward pass"). Bitwise the same result. With gradient accumulation, run all but the
        last backward inside `with opt.no_overlap():`; gradients must not change between
        backward and step (no clipping).
      shards: manual sharding without DTensor: {param or name: (global_shape, row_begin),
        (global_shape, row_begin, col_begin) or a dict with those keys and "num_heads"} for
        every parameter (module docstring, "Manual row shards").
      process_group: the torch.distributed group whose ranks hold `shards` (default: the
        default group); only with shards.

    Attributes:
      overlap_backward_enabled: whether the hooks mark gradients ready (initially
        overlap_backward; no_overlap() clears it for a block). Without overlap_backward there
        are no hooks and setting it does nothing.
    """

    def __init__(self, params, lr=0.02, momentum=0.95, beta2=0.95, weight_decay=0.0, *,
                 adamw_lr=3e-4, adamw_betas=(0.9, 0.95), adamw_eps=1e-10,
                 adamw_weight_decay=0.0, variant="normuon", ns_dtype="default", ns_steps=5,
                 ns_method="standard", ns_restarts=None, ns_symmetric_products=False, nesterov=True, owner_policy="round_robin", schedule=None,
                 bucket_bytes=None, check_finite=False, comm_timeout=600.0,
                 overlap_backward=False, shards=None, process_group=None):
        if variant not in _VARIANTS:
            raise ValueError(f"NorMuon: variant={variant!r}; expected one of {list(_VARIANTS)}")
        if ns_dtype not in _NS_DTYPES:
            raise ValueError(f"NorMuon: ns_dtype={ns_dtype!r}; expected one of "
                             f"{list(_NS_DTYPES)}")
        if ns_method not in _NS_METHODS:
            raise ValueError(f"NorMuon: ns_method={ns_method!r}; expected one of "
                             f"{list(_NS_METHODS)}")
        if ns_restarts is not None:
            if not (isinstance(ns_restarts, (list, tuple)) and
                    all(isinstance(i, int) for i in ns_restarts)):
                raise TypeError(f"NorMuon: ns_restarts={ns_restarts!r}; expected a list of ints "
                                f"or None")
            ns_restarts = [int(i) for i in ns_restarts]
        if not isinstance(ns_symmetric_products, bool):
            raise TypeError(f"NorMuon: ns_symmetric_products={ns_symmetric_products!r}; expected "
                            f"True or False")
        if owner_policy not in _OWNER_POLICIES:
            raise ValueError(f"NorMuon: owner_policy={owner_policy!r}; expected one of "
                             f"{list(_OWNER_POLICIES)}")
        if schedule is None:
            schedule = "bucketed" if overlap_backward else "sequential"
        if schedule not in _SCHEDULES:
            raise ValueError(f"NorMuon: schedule={schedule!r}; expected one of "
                             f"{list(_SCHEDULES)}")
        if bucket_bytes is not None and not (isinstance(bucket_bytes, int) and bucket_bytes > 0):
            raise ValueError(f"NorMuon: bucket_bytes={bucket_bytes!r}; expected a positive int "
                             f"or None (the library's default)")
        if not (isinstance(ns_steps, int) and 1 <= ns_steps <= 100):
            raise ValueError(f"NorMuon: ns_steps={ns_steps!r}; expected an int in [1, 100]")
        if not isinstance(overlap_backward, bool):
            raise TypeError(f"NorMuon: overlap_backward={overlap_backward!r}; expected True or "
                            f"False")
        self._switches = dict(variant=variant, ns_dtype=ns_dtype, ns_steps=int(ns_steps),
                              ns_method=ns_method, ns_restarts=ns_restarts,
                              ns_symmetric_products=ns_symmetric_products,
                              nesterov=bool(nesterov), owner_policy=owner_policy,
                              schedule=schedule, bucket_bytes=bucket_bytes,
                              check_finite=bool(check_finite),
                              comm_timeout=float(comm_timeout),
                              overlap_backward=overlap_backward)
        self._matrix_defaults = dict(lr=lr, momentum=momentum, beta2=beta2,
                                     weight_decay=weight_decay)
        self._adamw_defaults = dict(lr=adamw_lr, betas=tuple(adamw_betas), eps=adamw_eps,
                                    weight_decay=adamw_weight_decay)
        self._names = {}          # param -> name given with (name, tensor) pairs
        self._runtime = 0         # normuon_runtime_t, 0 until the first step
        self._runtime_groups = []  # runtime group id per torch group
        self._frozen = []         # per torch group: hyper-parameters fixed at registration
        self._registered = []     # _Registered per parameter, in state_dict index order
        self._comm = 0
        self._pending_state = None  # loaded before the first step: {index: {kind: tensor}}
        self._finalizer = None
        self._backend = None
        self._device = None
        # overlap_backward (see "Overlap with the backward pass" in the module docstring)
        self.overlap_backward_enabled = overlap_backward
        self._pending = _PendingStep()  # what the hooks did since the last step
        self._hook_lock = threading.Lock()
        self._hooks = []          # removable handles (and the AccumulateGrad nodes they hang on)
        self._hook_index = {}     # matrix parameter -> runtime index; filled at registration
        self._result_last = None  # (last_skipped, nonfinite_param) of the last kept step
        if overlap_backward:
            weakref.finalize(self, _remove_handles, self._hooks)
        self._process_group = process_group
        self._shard_of = {}       # id(param) -> RowShard (manual row sharding, `shards`)
        self._shards_given = self._parse_shards(shards, process_group)
        super().__init__(self._split(params), {})
        if self._shards_given is not None:
            unused = [who for who, (_, _, used) in self._shards_given.items() if not used[0]]
            if unused:
                raise ValueError(f"NorMuon: shards has entries for {unused}, which are not "
                                 f"parameters of any param group")

    def _parse_shards(self, shards, process_group):
        """The constructor's `shards`: {key: (tensor or None, entry, [used])} with key the
        parameter name or a description of the tensor (entries are checked when their
        parameter is added, naming it). None without shards."""
        if shards is None:
            if process_group is not None:
                raise ValueError("NorMuon: process_group is the group of the ranks that hold "
                                 "the rows given by `shards`; pass shards too (DTensors carry "
                                 "their own mesh)")
            return None
        if not isinstance(shards, dict):
            raise TypeError(f"NorMuon: shards must be a dict {{parameter or name: "
                            f"(global_shape, row_begin)}}, got {type(shards).__name__}")
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("NorMuon: shards needs an initialized torch.distributed "
                               "default group (the process group's ranks hold the rows)")
        self._shard_world = dist.get_world_size(process_group)
        out = {}
        for key, spec in shards.items():
            if isinstance(key, str):
                out[f"'{key}'"] = (None, spec, [False])
            elif isinstance(key, torch.Tensor):
                out[f"<tensor {list(key.shape)} at {key.data_ptr():#x}>"] = (key, spec, [False])
            else:
                raise TypeError(f"NorMuon: shards keys are parameters or their names, got "
                                f"{type(key).__name__} ({key!r})")
        return out

    def _take_shard(self, t, name, who):
        """Finds t's entry in `shards` (by tensor, else by name), marks it used and remembers
        it; None without shards. Raises ValueError naming `who` if t has none."""
        if self._shards_given is None:
            return None
        found = [(k, v) for k, v in self._shards_given.items()
                 if (v[0] is t) or (v[0] is None and name is not None and k == f"'{name}'")]
        if not found:
            raise ValueError(f"NorMuon: {who} has no entry in shards; with shards every "
                             f"parameter says which rows it holds (global_shape, row_begin)")
        if len(found) > 1:
            raise ValueError(f"NorMuon: {who} has two entries in shards (by tensor and by "
                             f"name)")
        _, (_, entry, used) = found[0]
        spec = _row_shard(entry, self._shard_world, who)
        used[0] = True
        self._shard_of[id(t)] = spec
        return spec

    def _lay(self, p, matrix, who):
        """_layout of p with its RowShard, if any."""
        return _layout(p, matrix, who, self._shard_of.get(id(p)))

    # --- construction ------------------------------------------------------------------

    def _split(self, params):
        """Normalizes the constructor's params into a list of group dicts."""
        if isinstance(params, torch.Tensor):
            raise TypeError("NorMuon: params must be an iterable of tensors, (name, tensor) "
                            "pairs or group dicts, not a single tensor")
        items = list(params)
        if not items:
            raise ValueError("NorMuon: got an empty parameter list")
        if isinstance(items[0], dict):
            return items
        matrices, others = [], []
        for item in items:
            t = item[1] if isinstance(item, tuple) else item
            (matrices if t.dim() >= 2 else others).append(item)
        groups = []
        if matrices:
            groups.append({"params": matrices, "use_muon": True})
        if others:
            groups.append({"params": others, "use_muon": False})
        return groups

    def add_param_group(self, param_group):
        """Adds a group (validated, defaults filled in). Only before the first step: the
        runtime's parameter set is fixed once it is registered."""
        if self._runtime:
            raise RuntimeError("NorMuon: add_param_group after the first step is not supported "
                               "(the runtime's parameters are fixed at registration)")
        if not isinstance(param_group, dict):
            raise TypeError(f"NorMuon: a param group must be a dict, got {type(param_group)}")
        group = dict(param_group)
        raw = group.get("params")
        if raw is None:
            raise ValueError("NorMuon: a param group needs 'params'")
        raw = [raw] if isinstance(raw, torch.Tensor) else list(raw)
        tensors, names = [], {}
        for item in raw:
            if isinstance(item, tuple):
                if len(item) != 2 or not isinstance(item[0], str):
                    raise TypeError("NorMuon: named parameters must be (str, tensor) pairs")
                names[item[1]] = item[0]
                item = item[1]
            if not isinstance(item, torch.Tensor):
                raise TypeError(f"NorMuon: params must be tensors, got {type(item)}")
            tensors.append(item)
        group["params"] = tensors
        gi = len(self.param_groups)
        use_muon = group.get("use_muon")
        if use_muon is None:
            dims = {t.dim() >= 2 for t in tensors}
            if len(dims) != 1:
                raise ValueError(f"NorMuon: group {gi} mixes matrices and tensors with fewer "
                                 f"than 2 dims; set use_muon=True or False")
            use_muon = dims.pop()
        group["use_muon"] = bool(use_muon)
        own = _MATRIX_KEYS if use_muon else _ADAMW_KEYS
        allowed = set(own) | {"params", "use_muon"} | _TOLERATED_KEYS
        unknown = sorted(k for k in group if k not in allowed)
        if unknown:
            kind = "matrix (use_muon=True)" if use_muon else "AdamW (use_muon=False)"
            raise ValueError(f"NorMuon: group {gi} is a {kind} group and takes the keys "
                             f"{list(own)}; got unknown keys {unknown}")
        defaults = self._matrix_defaults if use_muon else self._adamw_defaults
        for k in own:
            group.setdefault(k, defaults[k])
        if not use_muon:
            group["betas"] = tuple(group["betas"])
        self._check_hyper(group, gi)
        start = sum(len(g["params"]) for g in self.param_groups)
        for j, t in enumerate(tensors):
            who = f"parameter '{names.get(t, f'param.{start + j}')}' (group {gi})"
            if not t.is_leaf:
                raise ValueError(f"NorMuon: {who} is not a leaf tensor")
            _layout(t, use_muon, who, self._take_shard(t, names.get(t), who))
        super().add_param_group(group)
        self._names.update(names)
        if use_muon and self._switches["overlap_backward"]:
            for t in tensors:
                self._install_hook(t)

    @staticmethod
    def _check_hyper(group, gi):
        def real(k, v):
            if isinstance(v, torch.Tensor):
                v = v.item()
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError(f"NorMuon: group {gi}: {k}={v!r} is not a number")
            return float(v)
        for k in ("lr", "weight_decay"):
            if not (real(k, group[k]) >= 0.0):
                raise ValueError(f"NorMuon: group {gi}: {k}={group[k]} must be >= 0")
        betas = ([("momentum", group["momentum"]), ("beta2", group["beta2"])]
                 if group["use_muon"] else
                 [("betas[0]", group["betas"][0]), ("betas[1]", group["betas"][1])])
        if not group["use_muon"]:
            if len(group["betas"]) != 2:
                raise ValueError(f"NorMuon: group {gi}: betas={group['betas']} needs 2 values")
            if not (real("eps", group["eps"]) > 0.0):
                raise ValueError(f"NorMuon: group {gi}: eps={group['eps']} must be > 0")
        for k, v in betas:
            if not (0.0 <= real(k, v) < 1.0):
                raise ValueError(f"NorMuon: group {gi}: {k}={v} must be in [0, 1)")

    # --- per-step checks -----------------------------------------------------------------

    def _params(self):
        """[(group index, param)] in state_dict index order."""
        return [(gi, p) for gi, g in enumerate(self.param_groups) for p in g["params"]]

    def _name(self, i, p):
        return self._names.get(p, f"param.{i}")

    def _frozen_of(self, group):
        if group["use_muon"]:
            return ("muon", float(group["momentum"]), float(group["beta2"]))
        return ("adamw", float(group["betas"][0]), float(group["betas"][1]), float(group["eps"]))

    def _collect(self):
        """Checks every parameter (and gradient) and returns [(param, layout, local param,
        local grad or None)]. Raises before anything changes."""
        params = self._params()
        if self._runtime:
            if len(params) != len(self._registered) or any(
                    p is not r.param for (_, p), r in zip(params, self._registered)):
                raise RuntimeError("NorMuon: the parameters of the param groups changed after "
                                   "the first step; the runtime's parameter set is fixed")
            for gi, g in enumerate(self.param_groups):
                if self._frozen_of(g) != self._frozen[gi]:
                    raise ValueError(
                        f"NorMuon: group {gi}: momentum/beta2/betas/eps changed after the "
                        f"first step ({self._frozen[gi][1:]} -> {self._frozen_of(g)[1:]}); "
                        f"only lr and weight_decay may change (OneCycleLR: "
                        f"cycle_momentum=False)")
        out = []
        device = self._device
        for i, (gi, p) in enumerate(params):
            who = f"parameter '{self._name(i, p)}' (group {gi})"
            g = self.param_groups[gi]
            lay = (self._registered_layout(i, p, g["use_muon"], who) if self._runtime
                   else self._lay(p, g["use_muon"], who))
            if device is None:
                device = lay.device
            elif lay.device != device:
                raise ValueError(f"NorMuon: {who} is on {lay.device} but the other parameters "
                                 f"are on {device}; all parameters must be on one device")
            if device.type not in ("cpu", "cuda"):
                raise ValueError(f"NorMuon: {who} is on {device}; only cpu and cuda tensors "
                                 f"are supported")
            out.append((p, lay, _local(p), _checked_grad(p, lay, who)))
        worlds = {lay.world for _, lay, _, _ in out}
        if self._shards_given is None and (
                len(worlds) > 1 or (worlds != {1} and any(not _is_dtensor(p) for p, *_ in out))):
            raise ValueError("NorMuon: parameters mix sharded DTensors and plain tensors (or "
                             "DTensors of different meshes); use one kind for all")
        meshes = {lay.mesh for _, lay, _, _ in out if lay.mesh is not None and lay.world > 1}
        if len(meshes) > 1:
            first = {}
            for i, (p, lay, _, _) in enumerate(out):
                if lay.mesh is not None and lay.world > 1:
                    first.setdefault(lay.mesh, self._name(i, p))
            (ka, a), (kb, b) = list(first.items())[:2]
            raise ValueError(
                f"NorMuon: DTensor parameters '{a}' and '{b}' are sharded over different "
                f"ranks or mesh dims (shard groups {list(ka[0])} over mesh dims {ka[1]} and "
                f"{list(kb[0])} over {kb[1]}); one NorMuon runs one shard group: give "
                f"parameters replicated over a mesh dim that shards the others (e.g. norm "
                f"weights Replicate on the tensor-parallel dim) their own NorMuon")
        self._dtensor_ranks = list(next(iter(meshes))[0]) if meshes else None
        return out

    def _registered_layout(self, i, p, matrix, who):
        """p's layout now (as a matrix or not), which must be the one registered as runtime
        parameter i (raises ValueError naming both otherwise)."""
        old = self._registered[i].layout
        lay = self._lay(p, matrix, who)
        if lay != old:
            raise ValueError(
                f"NorMuon: {who} changed after the first step: now shape "
                f"{list(p.shape)} {lay.dtype} on {lay.device}, registered as "
                f"{old.rows}x{old.cols} (local {list(old.local_shape)}) {old.dtype} on "
                f"{old.device}; shapes, dtypes and devices are fixed at registration")
        return lay

    # --- the runtime ---------------------------------------------------------------------

    def _create_comm(self, world, device):
        """A communicator for `world` ranks: 0 for one rank; on CPU a torch.distributed
        communicator over a private gloo group (normuon._dist_comm) of the ranks of
        process_group (manual `shards`) or of the default group (DTensors); on CUDA an NCCL
        communicator whose unique id rank 0 makes and broadcasts over the default group."""
        if world == 1:
            return 0
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("NorMuon: sharded parameters need an initialized "
                               "torch.distributed default group")
        group = self._process_group if self._shards_given is not None else None
        ranks = getattr(self, "_dtensor_ranks", None) if self._shards_given is None else None
        if ranks is not None and len(ranks) != world:
            raise RuntimeError(f"NorMuon: the DTensors' shard group has {len(ranks)} ranks, "
                               f"the parameters' layout {world}")
        if device.type != "cuda":
            from . import _dist_comm
            return _dist_comm.create_gloo_comm(group, self._switches["comm_timeout"],
                                               ranks=ranks)
        if ranks is not None and ranks != list(range(dist.get_world_size())):
            raise NotImplementedError(
                f"NorMuon: CUDA DTensors whose shard group {ranks} is not the whole default "
                f"group (replicated mesh dims, HSDP) are supported on CPU (gloo) only in this "
                f"version; NCCL communicators span the default group")
        if dist.get_world_size(group) != world:
            raise NotImplementedError(f"NorMuon: the parameters' shard group has {world} ranks "
                                      f"but the default group {dist.get_world_size()}; on CUDA "
                                      f"the shard group must be the whole default group")
        if group is not None and group is not dist.group.WORLD:
            raise NotImplementedError("NorMuon: sharded CUDA parameters use an NCCL "
                                      "communicator over the default group; process_group "
                                      "is supported on CPU (gloo) only")
        # comm.h: normuon_nccl_get_unique_id(void* id) on rank 0; the id's bytes go to every
        # rank over the default group; normuon_comm_create_nccl(id, rank, world, device,
        # timeout_seconds, &comm) on each. A library built before these exist lacks them.
        needed = ("normuon_nccl_get_unique_id", "normuon_comm_create_nccl")
        missing = [n for n in needed if not _capi.has_symbol(n)]
        if missing:
            raise NotImplementedError(
                f"NorMuon: sharded (FSDP2, world size {world}) training needs the library's "
                f"NCCL communicator; {_capi.library_path()} does not export {missing}")
        lib = _capi.lib()
        nbytes = _capi.NCCL_UNIQUE_ID_BYTES
        uid = ctypes.create_string_buffer(nbytes)
        rank = dist.get_rank()
        if rank == 0:
            _capi.check_comm(lib.normuon_nccl_get_unique_id(uid), 0,
                             "normuon_nccl_get_unique_id")
        box = [uid.raw if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        uid = ctypes.create_string_buffer(box[0], nbytes)
        comm = ctypes.c_uint64()
        _capi.check_comm(lib.normuon_comm_create_nccl(
            uid, rank, world, device.index if device.index is not None else -1,
            float(self._switches["comm_timeout"]), ctypes.byref(comm)),
            0, "normuon_comm_create_nccl")
        return comm.value

    def _build(self, entries):
        """Creates the runtime, adds one runtime group per torch group, registers every
        parameter (current pointers), finalizes, and applies state loaded before. On failure
        destroys what it made and raises; the optimizer stays unregistered."""
        lib = _capi.lib()
        device = entries[0][1].device
        world = entries[0][1].world
        cfg = _capi.Config.defaults()
        if device.type == "cuda":
            cfg.backend = _capi.Backend.CUDA
            cfg.device = device.index if device.index is not None else torch.cuda.current_device()
        else:
            cfg.backend = _capi.Backend.CPU
        sw = self._switches
        cfg.variant = _VARIANTS[sw["variant"]]
        cfg.ns_dtype = _NS_DTYPES[sw["ns_dtype"]]
        cfg.ns_steps = sw["ns_steps"]
        cfg.ns_method = _NS_METHODS[sw["ns_method"]]
        if sw["ns_restarts"] is not None:  # the library checks the values (naming the field)
            self._ns_restarts_buf = (ctypes.c_int32 * max(1, len(sw["ns_restarts"])))(
                *sw["ns_restarts"])
            cfg.ns_restart_count = len(sw["ns_restarts"])
            cfg.ns_restarts = ctypes.cast(self._ns_restarts_buf, ctypes.POINTER(ctypes.c_int32))
        cfg.ns_symmetric_products = int(sw["ns_symmetric_products"])
        cfg.nesterov = int(sw["nesterov"])
        cfg.check_finite = int(sw["check_finite"])
        cfg.owner_policy = _OWNER_POLICIES[sw["owner_policy"]]
        cfg.schedule = _SCHEDULES[sw["schedule"]]
        if sw["bucket_bytes"] is not None:
            cfg.bucket_bytes = sw["bucket_bytes"]
        comm = self._create_comm(world, device)
        rt = ctypes.c_uint64()
        try:
            _capi.check(lib.normuon_create(ctypes.byref(cfg), ctypes.c_uint64(comm),
                                           ctypes.byref(rt)), 0, "normuon_create")
        finally:
            if comm:  # the runtime keeps its own reference
                lib.normuon_comm_destroy(ctypes.c_uint64(comm))
        rt = rt.value
        try:
            groups, frozen = [], []
            for gi, g in enumerate(self.param_groups):
                if g["use_muon"]:
                    d = _capi.GroupDesc.defaults(_capi.GroupKind.NORMUON)
                    d.beta1, d.beta2 = float(g["momentum"]), float(g["beta2"])
                    d.eps = _MATRIX_EPS
                else:
                    d = _capi.GroupDesc.defaults(_capi.GroupKind.ADAMW)
                    d.beta1, d.beta2, d.eps = (float(g["betas"][0]), float(g["betas"][1]),
                                               float(g["eps"]))
                d.lr, d.weight_decay = float(g["lr"]), float(g["weight_decay"])
                gid = ctypes.c_int32()
                _capi.check(lib.normuon_add_group(rt, ctypes.byref(d), ctypes.byref(gid)), rt,
                            f"normuon_add_group (group {gi})")
                groups.append(gid.value)
                frozen.append(self._frozen_of(g))
            registered = []
            for i, ((gi, p), (_, lay, lp, lg)) in enumerate(zip(self._params(), entries)):
                name = self._name(i, p)
                d = _capi.ParamDesc.defaults()
                name_bytes = name.encode("utf-8")
                d.name = name_bytes
                d.rows, d.cols = lay.rows, lay.cols
                d.num_heads = lay.num_heads
                pieces = None
                if lay.pieces:  # several rectangles stacked along dim 0 (desc.pieces, copied)
                    pieces = _piece_array(lay, lp.data_ptr(),
                                          lg.data_ptr() if lg is not None else None)
                    d.pieces = ctypes.cast(pieces, ctypes.c_void_p)
                    d.num_pieces = len(lay.pieces)
                else:
                    d.row_begin, d.row_count = lay.row_begin, lay.row_count
                    if lay.col_count != lay.cols:  # a rectangle; contiguous: ld = col_count
                        d.col_begin, d.col_count = lay.col_begin, lay.col_count
                        d.ld = lay.col_count
                    d.param = lp.data_ptr() if lay.row_count else None
                    d.grad = lg.data_ptr() if (lg is not None and lay.row_count) else None
                d.param_dtype = d.grad_dtype = _DTYPES[lay.dtype]
                d.group = groups[gi]
                idx = ctypes.c_int32()
                fn = "normuon_register_matrix" if lay.matrix else "normuon_register_adamw"
                _capi.check(getattr(lib, fn)(rt, ctypes.byref(d), ctypes.byref(idx)), rt, fn)
                if idx.value != i:
                    raise RuntimeError(f"NorMuon: runtime gave index {idx.value} to parameter "
                                       f"{i}; expected registration order")
                registered.append(_Registered(p, i, gi, lay, name))
            _capi.check(lib.normuon_finalize(rt), rt, "normuon_finalize")
            if self._pending_state is not None:
                self._write_state(rt, registered, self._pending_state)
        except BaseException:
            _destroy_runtime(rt)
            raise
        self._runtime, self._runtime_groups, self._frozen = rt, groups, frozen
        self._registered = registered
        self._hook_index = {r.param: r.index for r in registered if r.layout.matrix}
        self._device, self._backend = device, cfg.backend
        self._pending_state = None
        self._finalizer = weakref.finalize(self, _destroy_runtime, rt)

    def _stream(self):
        if self._backend == _capi.Backend.CUDA:
            return ctypes.c_void_p(torch.cuda.current_stream(self._device).cuda_stream)
        return None

    # --- torch.optim.Optimizer -----------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step over every parameter. With a closure, calls it first (with grad
        enabled) and returns its loss. On CUDA the step is queued on the current stream.

        Every check (shapes, dtypes, devices, contiguity, fixed hyper-parameters) runs before
        anything is written. A step skipped for non-finite gradients (check_finite=True) does
        not raise: step_result() reports it.

        With overlap_backward=True, a step whose gradient hooks began the runtime's work
        finishes that work here; misuse found now (a hook that fired twice, a gradient changed
        after its hook, a hook's error) discards the begun step and raises: parameters and
        optimizer state are unchanged and the gradients are kept."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        pending = self._pending
        if pending.begun:
            self._finish_overlapped_step(pending)
            return loss
        self._pending = _PendingStep()
        if pending.errors:
            raise pending.errors[0]
        entries = self._collect()
        if not self._runtime:
            self._build(entries)
        lib, rt = _capi.lib(), self._runtime
        self._push_group_lrs()
        for i, (_, lay, lp, lg) in enumerate(entries):
            self._bind(i, lay, lp, lg)
        self._run_step(lib, rt)
        return loss

    def _push_group_lrs(self):
        lib, rt = _capi.lib(), self._runtime
        for gi, g in enumerate(self.param_groups):
            _capi.check(lib.normuon_set_group_lr(rt, self._runtime_groups[gi], float(g["lr"]),
                                                 float(g["weight_decay"])),
                        rt, f"normuon_set_group_lr (group {gi})")

    def _run_step(self, lib, rt):
        status = lib.normuon_step(rt, -1.0, -1.0, self._stream())
        self._result_last = None
        if status != _capi.Status.ERROR_NONFINITE:  # a skipped step is reported by step_result
            _capi.check(status, rt, "normuon_step")

    def _bind(self, i, lay, local_param, local_grad):
        """Points runtime parameter i at the tensors' current memory."""
        p_ptr = local_param.data_ptr() if lay.row_count else None
        g_ptr = local_grad.data_ptr() if (local_grad is not None and lay.row_count) else None
        if lay.pieces:  # each piece at its place in the stacked local tensors
            for j, q in enumerate(_piece_array(lay, p_ptr, g_ptr)):
                _capi.check(_capi.lib().normuon_bind_piece(self._runtime, i, j, q.param, q.grad),
                            self._runtime,
                            f"normuon_bind_piece ({self._registered[i].name}, piece {j})")
            return
        _capi.check(_capi.lib().normuon_bind(self._runtime, i, p_ptr, g_ptr), self._runtime,
                    f"normuon_bind ({self._registered[i].name})")

    # --- overlap with the backward pass ------------------------------------------------

    @contextlib.contextmanager
    def no_overlap(self):
        """Backward passes inside this context do not mark gradients ready: use it for every
        micro-batch but the last when accumulating gradients (as DDP's no_sync()). Sets
        overlap_backward_enabled to False inside and restores it on exit."""
        saved = self.overlap_backward_enabled
        self.overlap_backward_enabled = False
        try:
            yield self
        finally:
            self.overlap_backward_enabled = saved

    def _install_hook(self, p):
        """Hooks `p` (a matrix parameter) so that its accumulated gradient is marked ready.
        Parameters that do not require grad get no hook (and no gradient)."""
        if not p.requires_grad:
            return
        ref = weakref.ref(self)  # the hooks must not keep the optimizer (and runtime) alive
        if _POST_ACCUMULATE_HOOKS:
            def post_accumulate(param):
                opt = ref()
                if opt is not None:
                    opt._grad_accumulated(param)
            self._hooks.append(p.register_post_accumulate_grad_hook(post_accumulate))
            return
        # PyTorch < 2.1: a post-hook of the parameter's AccumulateGrad node. The parameter
        # holds its node weakly: keep a reference, or the node (and the hook) is dropped.
        with torch.enable_grad():
            node = p.expand_as(p).grad_fn.next_functions[0][0]

        def node_hook(grad_inputs, grad_outputs, param=p):
            opt = ref()
            if opt is not None:
                opt._grad_accumulated(param)
        self._hooks.append((node, node.register_hook(node_hook)))

    def _grad_accumulated(self, p):
        """The hook: p's gradient of this backward pass is accumulated into p.grad. Binds p to
        it and marks it ready. Never raises: an error is kept for step(), and the rest of the
        step marks nothing."""
        if not (self.overlap_backward_enabled and self._runtime):
            return  # disabled, or the first step (the runtime is built by it)
        with self._hook_lock:
            pending = self._pending
            i = self._hook_index.get(p)
            if i is None or pending.errors:
                return
            try:
                self._mark_ready(pending, i, p)
            except Exception as e:  # noqa: BLE001  (raised by step, after the discard)
                pending.errors.append(e)

    def _mark_ready(self, pending, i, p):
        """Binds matrix i to its current memory and its accumulated .grad (no copy: the runtime
        reads the gradient where autograd left it) and marks it ready."""
        reg = self._registered[i]
        who = f"parameter '{reg.name}' (group {reg.group})"
        if i in pending.marked:
            raise RuntimeError(
                f"NorMuon(overlap_backward=True): the gradient of {who} was accumulated again "
                f"after its hook had marked it ready in this step: two backward passes without "
                f"a step between (gradient accumulation?). Run every backward pass but the "
                f"last inside `with opt.no_overlap():` (or set opt.overlap_backward_enabled = "
                f"False for them), and call opt.zero_grad() to drop a step you do not take. "
                f"This step was discarded: parameters and optimizer state are unchanged, the "
                f"gradients are kept")
        lay = self._registered_layout(i, p, reg.layout.matrix, who)
        grad = _checked_grad(p, reg.layout, who)
        if grad is None:
            raise RuntimeError(f"NorMuon: the gradient hook of {who} fired but .grad is None")
        local = _local(p)
        # Accepted inside a begun step: i is not marked yet, so nothing reads it yet.
        self._bind(i, lay, local, grad)
        lib, rt = _capi.lib(), self._runtime
        index = ctypes.c_int32(i)
        _capi.check(lib.normuon_grad_ready(rt, ctypes.byref(index), 1, self._stream()), rt,
                    f"normuon_grad_ready ({reg.name})")
        # The runtime now holds this memory until step: keep both alive (also if .grad or
        # .data is replaced) and remember the gradient's version to catch later writes.
        pending.params[i] = local.detach()
        pending.marked[i] = (p.grad, grad._version)
        pending.begun = True

    def _finish_overlapped_step(self, pending):
        """Completes a step that grad_ready began: binds every parameter not marked (to its
        current memory and gradient, or none) and runs the step. Raises (after discarding the
        begun step) on misuse or a hook's error."""
        try:
            if pending.errors:
                raise pending.errors[0]
            entries = self._collect()
            self._check_pending(pending, entries)
            self._push_group_lrs()
            for i, (_, lay, lp, lg) in enumerate(entries):
                if i not in pending.marked:  # not read by the runtime yet: bound as usual
                    self._bind(i, lay, lp, lg)
        except BaseException:
            self._discard_pending_step()
            raise
        self._pending = _PendingStep()
        self._run_step(_capi.lib(), self._runtime)

    def _check_pending(self, pending, entries):
        """Raises if what the runtime was bound to, and read, in the hooks changed since: a
        marked matrix's parameter memory or its gradient. The other parameters are bound at
        step, to their memory then."""
        for i, (p, lay, lp, lg) in enumerate(entries):
            if i not in pending.marked:
                continue
            reg = self._registered[i]
            who = f"parameter '{reg.name}' (group {reg.group})"
            bound = pending.params[i]
            if lay.row_count and lp.data_ptr() != bound.data_ptr():
                raise RuntimeError(
                    f"NorMuon(overlap_backward=True): the memory of {who} moved after its "
                    f"gradient hook bound it this step; the runtime stays bound to a matrix "
                    f"from its gradient hook to step: replace parameters before backward. "
                    f"This step was discarded: nothing changed")
            g, version = pending.marked[i]
            if p.grad is not g or lg._version != version:
                raise RuntimeError(
                    f"NorMuon(overlap_backward=True): the gradient of {who} was changed "
                    f"or replaced after its hook marked it ready (gradient clipping, "
                    f"unscaling, or any write to .grad between backward and step), and "
                    f"the runtime had already read it. With overlap_backward, gradients "
                    f"must stay unchanged from backward to step; use "
                    f"overlap_backward=False to edit them. This step was discarded: "
                    f"parameters and optimizer state are unchanged")

    def _discard_pending_step(self):
        """Drops what the hooks did since the last step. If grad_ready began the runtime's
        step, normuon_step_cancel abandons it on every rank: no parameter, state or step count
        changes. The marked matrices' gradients and parameter memory stay alive through
        `pending` until the abandoned work has finished (waited for below on CUDA)."""
        pending, self._pending = self._pending, _PendingStep()
        if not pending.begun:
            return
        lib, rt = _capi.lib(), self._runtime
        if self._result_last is None:
            before = self._raw_step_info()
            self._result_last = (bool(before.last_skipped), before.nonfinite_param)
        status = lib.normuon_step_cancel(rt)
        self._raw_step_info()  # waits for the abandoned work (CUDA) before pending is freed
        del pending
        _capi.check(status, rt, "normuon_step_cancel (discarding an overlapped step)")

    def _raw_step_info(self):
        info = _capi.StepInfo.defaults()
        _capi.check(_capi.lib().normuon_step_result(self._runtime, ctypes.byref(info)),
                    self._runtime, "normuon_step_result")
        return info

    def zero_grad(self, *args, **kwargs):
        """As torch's. With overlap_backward, a step that the gradient hooks began but
        step() did not take (backward, then no step) is discarded first: nothing changes."""
        if self._pending.active():
            self._discard_pending_step()
        super().zero_grad(*args, **kwargs)

    def step_result(self):
        """StepResult of the steps so far (waits for the last step on CUDA). Before the first
        step: zeros. Steps discarded by overlap_backward's misuse handling are not counted."""
        if not self._runtime:
            return StepResult(0, 0, False, None)
        info = self._raw_step_info()
        last_skipped, bad = bool(info.last_skipped), info.nonfinite_param
        if self._result_last is not None:
            last_skipped, bad = self._result_last
        return StepResult(info.steps_taken, info.steps_skipped, last_skipped,
                          self._registered[bad].name if bad >= 0 else None, info.ns_fallbacks)

    def last_step_profile(self):
        """Per-phase wall times (ms) of the last step as a dict (CPU backend only)."""
        if not self._runtime:
            raise RuntimeError("NorMuon: no step has run yet")
        prof = _capi.StepProfile.defaults()
        _capi.check(_capi.lib().normuon_last_step_profile(self._runtime, ctypes.byref(prof)),
                    self._runtime, "normuon_last_step_profile")
        return {name: getattr(prof, name) for name, _ in _capi.StepProfile._fields_[1:]}

    def last_step_trace(self):
        """The last step as Chrome trace events (a JSON fragment without the enclosing
        brackets; normuon_last_step_trace). CPU backend only."""
        if not self._runtime:
            raise RuntimeError("NorMuon: no step has run yet")
        lib, needed = _capi.lib(), ctypes.c_uint64()
        _capi.check(lib.normuon_last_step_trace(self._runtime, None, 0, ctypes.byref(needed)),
                    self._runtime, "normuon_last_step_trace")
        buf = ctypes.create_string_buffer(needed.value)
        _capi.check(lib.normuon_last_step_trace(self._runtime, buf, needed.value,
                                                ctypes.byref(needed)),
                    self._runtime, "normuon_last_step_trace")
        return buf.value.decode("utf-8")

    def memory_required(self):
        """Bytes of optimizer state and step buffers the runtime allocated (after the first
        step), as normuon_memory_required."""
        if not self._runtime:
            raise RuntimeError("NorMuon: the runtime is created at the first step")
        n = ctypes.c_uint64()
        _capi.check(_capi.lib().normuon_memory_required(self._runtime, ctypes.byref(n)),
                    self._runtime, "normuon_memory_required")
        return n.value

    # --- checkpoints ---------------------------------------------------------------------

    def _state_kinds(self, layout):
        """[(state_dict key, kind)] held for a parameter of this layout (also when this rank
        holds none of its rows: the tensors are then empty)."""
        if not layout.matrix:
            return list(_ADAMW_STATE.items()) + [("step", _capi.StateKind.STEP)]
        if self._switches["variant"] == "muon":
            return [("momentum_buffer", _capi.StateKind.MOMENTUM)]
        return list(_MATRIX_STATE.items())

    def _read_state(self, reg):
        """The state of one registered parameter as state_dict tensors (fp32 copies on the
        parameter's device; DTensors for DTensor parameters; "step" an int64 CPU scalar)."""
        lib, rt = _capi.lib(), self._runtime
        out = {}
        for key, kind in self._state_kinds(reg.layout):
            if kind == _capi.StateKind.STEP:
                v = ctypes.c_int64()
                _capi.check(lib.normuon_get_state(rt, reg.index, kind, ctypes.byref(v), 8), rt,
                            f"normuon_get_state ({reg.name}, {key})")
                out[key] = torch.tensor(v.value, dtype=torch.int64)
                continue
            shape = _state_shape(reg.layout, kind)
            host = torch.empty(shape, dtype=torch.float32)
            nbytes = host.numel() * 4
            if nbytes:
                _capi.check(lib.normuon_get_state(rt, reg.index, kind, host.data_ptr(), nbytes),
                            rt, f"normuon_get_state ({reg.name}, {key})")
            out[key] = self._to_param_like(host, reg, kind)
        return out

    def _to_param_like(self, host, reg, kind):
        t = host.to(reg.layout.device)
        p = reg.param
        if not _is_dtensor(p):
            return t
        placements = tuple(p.placements)
        if kind == _capi.StateKind.SECOND_MOMENT:
            # v has one value per row (rows x 1): the holders of a row's column pieces all
            # keep the same v, so a column split (Shard(1)) becomes Replicate.
            gshape = (reg.layout.rows, 1)
            placements = tuple(
                _replicate_like(p) if _placement(pl)[0] in ("shard", "strided")
                and _placement(pl)[1] == 1 else pl for pl in placements)
        else:
            gshape = tuple(p.shape)
        stride = torch.empty(gshape, device="meta").stride()
        # DTensor's own class (torch.distributed.tensor's, or a stand-in with the same API)
        return type(p).from_local(t, p.device_mesh, placements, run_check=False,
                                  shape=torch.Size(gshape), stride=stride)

    def _write_state(self, rt, registered, state):
        """Writes checked state ({index: {kind: flat fp32 CPU tensor or int}}) into the
        runtime; parameters missing from `state` get zero state."""
        lib = _capi.lib()
        for reg in registered:
            entry = state.get(reg.index, {})
            for key, kind in self._state_kinds(reg.layout):
                if kind == _capi.StateKind.STEP:
                    v = ctypes.c_int64(int(entry.get(kind, 0)))
                    _capi.check(lib.normuon_set_state(rt, reg.index, kind, ctypes.byref(v), 8),
                                rt, f"normuon_set_state ({reg.name}, {key})")
                    continue
                n = _state_numel(reg.layout, kind, self._switches["variant"])
                src = entry.get(kind)
                if src is None:
                    src = torch.zeros(n, dtype=torch.float32)
                if n:
                    _capi.check(lib.normuon_set_state(rt, reg.index, kind, src.data_ptr(), n * 4),
                                rt, f"normuon_set_state ({reg.name}, {key})")

    def state_dict(self):
        """The standard torch optimizer state dict (see the module docstring for the keys).
        Reads the live state from the runtime (on CUDA: waits for the last step)."""
        param_groups, start = [], 0
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = list(range(start, start + len(g["params"])))
            start += len(g["params"])
            param_groups.append(packed)
        state = {}
        if self._runtime:
            for reg in self._registered:
                state[reg.index] = self._read_state(reg)
        elif self._pending_state is not None:
            params = self._params()
            for i, entry in self._pending_state.items():
                gi, p = params[i]
                lay = self._lay(p, self.param_groups[gi]["use_muon"], self._name(i, p))
                reg = _Registered(p, i, gi, lay, self._name(i, p))
                out = {}
                for key, kind in self._state_kinds(lay):
                    if kind == _capi.StateKind.STEP:
                        out[key] = torch.tensor(int(entry.get(kind, 0)), dtype=torch.int64)
                    else:
                        n = _state_numel(lay, kind, self._switches["variant"])
                        flat = entry.get(kind, torch.zeros(n, dtype=torch.float32))
                        out[key] = self._to_param_like(
                            flat.clone().reshape(_state_shape(lay, kind)), reg, kind)
                state[i] = out
        return {"state": state, "param_groups": param_groups}

    def load_state_dict(self, state_dict):
        """Loads a state dict of the layout state_dict() writes (also before the first step:
        the state is kept and written into the runtime when it is created). Everything is
        checked first (group count and sizes, use_muon, state keys and sizes); on any mismatch
        this raises and changes nothing. Group hyper-parameters are taken from the saved
        groups, as torch does."""
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"NorMuon: the state dict has {len(saved_groups)} param groups, "
                             f"this optimizer {len(self.param_groups)}")
        index = {}
        for gi, (sg, g) in enumerate(zip(saved_groups, self.param_groups)):
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(f"NorMuon: group {gi} has {len(g['params'])} parameters, the "
                                 f"state dict's {len(sg['params'])}")
            if bool(sg.get("use_muon", g["use_muon"])) != g["use_muon"]:
                raise ValueError(f"NorMuon: group {gi}: use_muon is {g['use_muon']} here and "
                                 f"{sg.get('use_muon')} in the state dict")
            for saved_id, p in zip(sg["params"], g["params"]):
                index[saved_id] = p
        position = {p: i for i, (_, p) in enumerate(self._params())}
        params = self._params()
        variant = self._switches["variant"]
        pending = {}
        for saved_id, entry in saved_state.items():
            if saved_id not in index:
                raise ValueError(f"NorMuon: the state dict has state for parameter {saved_id}, "
                                 f"which no group lists")
            i = position[index[saved_id]]
            gi, p = params[i]
            name = self._name(i, p)
            lay = (self._registered[i].layout if self._runtime else
                   self._lay(p, self.param_groups[gi]["use_muon"], f"parameter '{name}'"))
            expected = {key: kind for key, kind in self._state_kinds(lay)}
            if set(entry) != set(expected):
                raise ValueError(f"NorMuon: state of parameter '{name}' has keys "
                                 f"{sorted(entry)}; expected {sorted(expected)} (variant "
                                 f"{variant!r}, {'matrix' if lay.matrix else 'AdamW'})")
            out = {}
            for key, kind in expected.items():
                value = entry[key]
                if kind == _capi.StateKind.STEP:
                    step = int(value.item() if isinstance(value, torch.Tensor) else value)
                    if step < 0:
                        raise ValueError(f"NorMuon: state of '{name}': step {step} < 0")
                    out[kind] = step
                    continue
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"NorMuon: state of '{name}': {key} is not a tensor")
                t = _local(value).detach().to("cpu", torch.float32).contiguous().reshape(-1)
                n = _state_numel(lay, kind, variant)
                if t.numel() != n:
                    raise ValueError(f"NorMuon: state of '{name}': {key} has {t.numel()} "
                                     f"elements, this parameter's needs {n} (shape "
                                     f"{list(_state_shape(lay, kind))})")
                out[kind] = t.clone()
            pending[i] = out
        new_groups = []
        for gi, (sg, g) in enumerate(zip(saved_groups, self.param_groups)):
            ng = {k: v for k, v in sg.items() if k != "params"}
            ng["params"] = g["params"]
            ng["use_muon"] = g["use_muon"]
            if not ng["use_muon"] and "betas" in ng:
                ng["betas"] = tuple(ng["betas"])
            self._check_hyper({**g, **ng}, gi)
            new_groups.append({**g, **ng})
        if self._runtime:
            if self._pending.active():  # the loaded state replaces what a begun step read
                self._discard_pending_step()
            self._write_state(self._runtime, self._registered, pending)
            self._pending_state = None
        else:
            self._pending_state = pending
        self.param_groups[:] = new_groups

    def __getstate__(self):
        raise TypeError("NorMuon holds a runtime handle and cannot be pickled or deep-copied; "
                        "save and load its state_dict() instead")

    def __repr__(self):
        sw = ", ".join(f"{k}={v!r}" for k, v in self._switches.items())
        lines = [f"NorMuon({sw})"]
        for gi, g in enumerate(self.param_groups):
            keys = ", ".join(f"{k}={g[k]!r}" for k in g if k != "params")
            lines.append(f"  group {gi}: {len(g['params'])} params, {keys}")
        return "\n".join(lines)
