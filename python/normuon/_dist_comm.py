"""A normuon communicator over a torch.distributed process group, on host memory (gloo).

`create_gloo_comm(group, timeout)` returns a normuon_comm_t (comm.h) whose three collectives are
Python callbacks (normuon_comm_create_custom) that call torch.distributed on a process group of
their own: a gloo group over the same ranks as `group`, made here with dist.new_group, so that
the runtime's collectives never interleave with the trainer's (with overlap_backward they run on
the runtime's worker threads while the trainer's backward pass may issue its own collectives).

How each callback of comm.h is carried out (all buffers are the runtime's host memory; none of
them is handed to torch.distributed: every transfer goes through staging tensors owned here, so
a message that lands after a timeout can never write into the runtime's memory):
  * exchange: first an all-gather of each rank's transfer signature (per peer: the bytes, the
    number of non-empty transfers and a CRC of their sizes, for sends and receives), checked on
    every rank, so that a disagreement fails every rank with one message naming both ranks and
    both counts, before any byte moves. Then one all_to_all_single over the concatenated sends
    (peer order, list order within a peer); zero-byte transfers are skipped, a transfer to the
    calling rank itself is a local copy.
  * all_reduce_sum_f32: an all-gather of every rank's floats, summed here in rank order 0, 1,
    ..., P-1 (the in-process group's order): the bitwise-same result on every rank and in every
    run, whatever gloo's own reduction order would be.
  * all_gather: all_gather into a staging tensor, then one copy into `out`.
  * abort: marks the communicator failed; a call waiting on another thread returns within
    _POLL_SECONDS. destroy: drops the adapter. last_error: the message of the last failure.

Blocking: every wait is a loop of Work.wait(timeout=_POLL_SECONDS) up to `timeout` seconds in
all, which then returns NORMUON_ERROR_TIMEOUT. The private gloo group is made with the same
timeout, so gloo's own threads give up at the same moment. A peer that died (SIGKILL) closes its
TCP connections: gloo reports that at once and the call returns NORMUON_ERROR_COMM with gloo's
message. Any failure is final (comm.h): later calls fail at once. Staging tensors of a failed
call are kept alive until the communicator is destroyed.
"""

import ctypes
import datetime
import itertools
import struct
import threading
import time
import zlib

import torch

from . import _capi

__all__ = ["create_gloo_comm"]

# How long one Work.wait blocks before the loop looks at the abort flag and the deadline.
_POLL_SECONDS = 0.05

# ctx id -> _GlooComm. The C side holds only the id; destroy() removes the entry.
_ADAPTERS = {}
_ADAPTERS_LOCK = threading.Lock()
_NEXT_ID = itertools.count(1)


class _Failure(Exception):
    """A failed collective: the status to return and its message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _group_ranks(dist, group):
    """The global ranks of `group`, in group-rank order."""
    if group is None or group is dist.group.WORLD:
        return list(range(dist.get_world_size()))
    if hasattr(dist, "get_process_group_ranks"):
        return list(dist.get_process_group_ranks(group))
    mapping = dist.distributed_c10d._pg_group_ranks[group]  # torch < 2.0: global -> group rank
    return [g for g, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


class _GlooComm:
    def __init__(self, group, rank, world, timeout):
        self.group, self.rank, self.world, self.timeout = group, rank, world, float(timeout)
        self.failed = None            # (status, message) of the failure that ended it
        self.aborted = False
        self.collectives = 0          # collective number, as the error messages count them
        self.error_buf = ctypes.create_string_buffer(b"")
        self.keep = []                # staging tensors of failed calls (gloo may still use them)

    # --- plumbing --------------------------------------------------------------------------

    def _where(self, kind):
        return (f"torch.distributed (gloo) communicator rank {self.rank} of {self.world}, "
                f"collective #{self.collectives} ({kind})")

    def _wait(self, work, kind, staging):
        """Waits for work in slices until done, aborted, failed or past the deadline."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self.aborted:
                self.keep.extend(staging)
                raise _Failure(_capi.Status.ERROR_COMM, f"{self._where(kind)}: aborted "
                               f"(normuon_comm_abort) while waiting for peers")
            # At least 1 ms: torch's Work.wait reads a timeout of 0 ms as "no timeout".
            left = deadline - time.monotonic()
            try:
                slice_s = max(0.001, min(_POLL_SECONDS, left))
                work.wait(timeout=datetime.timedelta(seconds=slice_s))
                return
            except RuntimeError:
                pass  # this slice ended (or the work failed): look at the work itself
            if work.is_completed():
                # Done, possibly just after the slice ended: its own outcome decides (a failed
                # work keeps its exception; a second wait returns or raises it at once).
                try:
                    work.wait()
                    return
                except RuntimeError as e:
                    self.keep.extend(staging)
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
                    if "timed out" in msg.lower():  # gloo's own timeout (the same seconds)
                        raise _Failure(_capi.Status.ERROR_TIMEOUT,
                                       f"{self._where(kind)}: not complete after "
                                       f"{self.timeout:g} s: a peer did not take part in time "
                                       f"(dead, hung, or no longer calling step); gloo: "
                                       f"{msg}") from None
                    raise _Failure(_capi.Status.ERROR_COMM, f"{self._where(kind)}: gloo failed "
                                   f"(a peer died or left the group?): {msg}") from None
            if time.monotonic() >= deadline:
                self.keep.extend(staging)
                raise _Failure(_capi.Status.ERROR_TIMEOUT,
                               f"{self._where(kind)}: not complete after {self.timeout:g} s: a "
                               f"peer did not take part in time (dead, hung, or no longer "
                               f"calling step)")

    def _gather(self, src, kind):
        """All-gather of a 1-D tensor of the same size on every rank -> (world, n) tensor."""
        import torch.distributed as dist
        out = torch.empty((self.world,) + tuple(src.shape), dtype=src.dtype)
        outs = list(out.unbind(0))
        work = dist.all_gather(outs, src, group=self.group, async_op=True)
        self._wait(work, kind, [src, out] + outs)
        return out

    def run(self, kind, fn, *args):
        """Runs one collective: the failure state first, then fn; turns every exception into
        a status and a message (a ctypes callback must never raise)."""
        try:
            if self.failed is not None:
                raise _Failure(_capi.Status.ERROR_COMM,
                               f"{self._where(kind)} refused: the communicator failed earlier: "
                               f"{self.failed[1]}")
            fn(*args)
            return _capi.Status.SUCCESS
        except _Failure as f:
            return self._fail(f.status, str(f))
        except BaseException as e:  # noqa: BLE001  (reported through the status)
            return self._fail(_capi.Status.ERROR_COMM,
                              f"{self._where(kind)}: {type(e).__name__}: {e}")
        finally:
            self.collectives += 1

    def _fail(self, status, message):
        if self.failed is None:  # comm.h: a failed collective leaves the communicator failed
            self.failed = (int(status), message)
        self.error_buf = ctypes.create_string_buffer(message.encode("utf-8", "replace"))
        return int(status)

    # --- the collectives -------------------------------------------------------------------

    def exchange(self, sends, n_sends, recvs, n_recvs):
        kind = f"exchange, {n_sends} sends, {n_recvs} receives"
        world = self.world
        send_lists = [[] for _ in range(world)]
        recv_lists = [[] for _ in range(world)]
        for lists, arr, n, what in ((send_lists, sends, n_sends, "sends"),
                                    (recv_lists, recvs, n_recvs, "recvs")):
            for i in range(n):
                t = arr[i]
                if not 0 <= t.peer < world:
                    raise _Failure(_capi.Status.ERROR_INVALID_ARGUMENT,
                                   f"{self._where(kind)}: {what}[{i}].peer = {t.peer} is not "
                                   f"a rank of a group of {world}")
                if t.bytes and not t.buf:
                    raise _Failure(_capi.Status.ERROR_INVALID_ARGUMENT,
                                   f"{self._where(kind)}: {what}[{i}].buf is NULL with "
                                   f"{t.bytes} bytes")
                if t.bytes:
                    lists[t.peer].append((t.buf, t.bytes))
        # Signatures: per peer (bytes, transfers, crc32 of the sizes), sends then receives.
        def signature(items):
            sizes = [b for _, b in items]
            return (sum(sizes), len(sizes),
                    zlib.crc32(struct.pack(f"<{len(sizes)}Q", *sizes)))
        mine = [signature(s) for s in send_lists] + [signature(r) for r in recv_lists]
        sig = torch.tensor(mine, dtype=torch.int64).reshape(-1)
        table = self._gather(sig, kind + ", size check").reshape(world, 2, world, 3).tolist()
        for src in range(world):
            for dst in range(world):
                sent, expected = table[src][0][dst], table[dst][1][src]
                if sent != expected:
                    raise _Failure(
                        _capi.Status.ERROR_COMM,
                        f"{self._where(kind)}: rank {src} sends {sent[0]} bytes in "
                        f"{sent[1]} transfers to rank {dst}, which expects {expected[0]} bytes "
                        f"in {expected[1]} transfers from it (or the transfer sizes differ); "
                        f"nothing was copied")
        in_splits = [0 if d == self.rank else sum(b for _, b in send_lists[d])
                     for d in range(world)]
        out_splits = [0 if s == self.rank else sum(b for _, b in recv_lists[s])
                      for s in range(world)]
        if sum(in_splits) or sum(out_splits):
            import torch.distributed as dist
            send_buf = torch.empty(sum(in_splits), dtype=torch.uint8)
            recv_buf = torch.empty(sum(out_splits), dtype=torch.uint8)
            base, off = send_buf.data_ptr(), 0
            for d in range(world):
                if d == self.rank:
                    continue
                for buf, nbytes in send_lists[d]:
                    ctypes.memmove(base + off, buf, nbytes)
                    off += nbytes
            work = dist.all_to_all_single(recv_buf, send_buf, out_splits, in_splits,
                                          group=self.group, async_op=True)
            self._wait(work, kind, [send_buf, recv_buf])
            base, off = recv_buf.data_ptr(), 0
            for s in range(world):
                if s == self.rank:
                    continue
                for buf, nbytes in recv_lists[s]:
                    ctypes.memmove(buf, base + off, nbytes)
                    off += nbytes
        # Local copies last: nothing is written unless the exchange succeeded.
        for (sbuf, _), (rbuf, nbytes) in zip(send_lists[self.rank], recv_lists[self.rank]):
            ctypes.memmove(rbuf, sbuf, nbytes)

    def all_reduce(self, in_ptr, out_ptr, count):
        if count == 0:
            return
        kind = f"all_reduce_sum_f32, {count} floats"
        mine = torch.empty(count, dtype=torch.float32)
        ctypes.memmove(mine.data_ptr(), in_ptr, count * 4)
        parts = self._gather(mine, kind)
        total = parts[0].clone()
        for r in range(1, self.world):  # rank order: the same bits everywhere
            total += parts[r]
        ctypes.memmove(out_ptr, total.data_ptr(), count * 4)

    def all_gather(self, in_ptr, out_ptr, nbytes):
        if nbytes == 0:
            return
        kind = f"all_gather, {nbytes} bytes per rank"
        mine = torch.empty(nbytes, dtype=torch.uint8)
        ctypes.memmove(mine.data_ptr(), in_ptr, nbytes)
        parts = self._gather(mine, kind)
        ctypes.memmove(out_ptr, parts.data_ptr(), nbytes * self.world)


# --- the C callbacks: module-level, so they outlive every communicator --------------------


def _adapter(ctx):
    with _ADAPTERS_LOCK:
        return _ADAPTERS.get(ctx or 0)


def _exchange(ctx, sends, n_sends, recvs, n_recvs, stream):
    a = _adapter(ctx)
    if a is None:
        return int(_capi.Status.ERROR_INVALID_STATE)
    return a.run("exchange", a.exchange, sends, n_sends, recvs, n_recvs)


def _all_reduce(ctx, in_ptr, out_ptr, count, stream):
    a = _adapter(ctx)
    if a is None:
        return int(_capi.Status.ERROR_INVALID_STATE)
    return a.run("all_reduce_sum_f32", a.all_reduce,
                 ctypes.cast(in_ptr, ctypes.c_void_p).value or 0,
                 ctypes.cast(out_ptr, ctypes.c_void_p).value or 0, count)


def _all_gather(ctx, in_ptr, out_ptr, nbytes, stream):
    a = _adapter(ctx)
    if a is None:
        return int(_capi.Status.ERROR_INVALID_STATE)
    return a.run("all_gather", a.all_gather, in_ptr or 0, out_ptr or 0, nbytes)


def _abort(ctx):
    a = _adapter(ctx)
    if a is not None:
        a.aborted = True
        if a.failed is None:
            a.failed = (int(_capi.Status.ERROR_COMM), "aborted (normuon_comm_abort)")
    return int(_capi.Status.SUCCESS)


def _destroy(ctx):
    with _ADAPTERS_LOCK:
        _ADAPTERS.pop(ctx or 0, None)


def _last_error(ctx):
    a = _adapter(ctx)
    return ctypes.addressof(a.error_buf) if a is not None else None


_CALLBACKS = (_capi.ExchangeFn(_exchange), _capi.AllReduceSumF32Fn(_all_reduce),
              _capi.AllGatherFn(_all_gather), _capi.AbortFn(_abort), _capi.DestroyFn(_destroy),
              _capi.LastErrorFn(_last_error))


def create_gloo_comm(group=None, timeout=600.0, ranks=None):
    """A normuon_comm_t (int handle) over the ranks of `group` (default: the default group),
    through a private gloo group over the same ranks. Collective: every rank of the default
    group calls it, in the same order as its other new_group calls (torch's rule for
    dist.new_group). timeout: seconds that bound each collective (finite, > 0). The caller
    destroys the handle with normuon_comm_destroy (a runtime made with it keeps its own
    reference). ranks: the global ranks instead of `group` (a DTensor's shard group, in the
    runtime's rank order)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("normuon: a torch.distributed communicator needs an initialized "
                           "default process group (torch.distributed.init_process_group)")
    if not dist.is_gloo_available():
        raise RuntimeError("normuon: this torch has no gloo backend")
    timeout = float(timeout)
    if not (0.0 < timeout <= 1e7):
        raise ValueError(f"normuon: timeout={timeout} must be in (0, 1e7] seconds")
    ranks = list(ranks) if ranks is not None else _group_ranks(dist, group)
    # Replica groups (HSDP) run one runtime per shard group: processes then pass different
    # groups, but torch wants every process to call new_group for every group, in one order.
    # So learn every process's group and make them all (sorted), keeping this process's one.
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, list(ranks))
    private = None
    for members in sorted({tuple(r) for r in everyone}):
        made = dist.new_group(ranks=list(members), backend="gloo",
                              timeout=datetime.timedelta(seconds=timeout))
        if list(members) == list(ranks):
            private = made
    me = dist.get_rank()
    if me not in ranks:
        raise RuntimeError(f"normuon: this process (global rank {me}) is not in the group "
                           f"{ranks}")
    adapter = _GlooComm(private, ranks.index(me), len(ranks), timeout)
    ctx = next(_NEXT_ID)
    with _ADAPTERS_LOCK:
        _ADAPTERS[ctx] = adapter
    lib = _capi.lib()
    ops = _capi.CommOps()
    lib.normuon_comm_ops_init(ctypes.byref(ops))
    ops.ctx = ctx
    ops.rank, ops.world_size = adapter.rank, adapter.world
    (ops.exchange, ops.all_reduce_sum_f32, ops.all_gather, ops.abort, ops.destroy,
     ops.last_error) = _CALLBACKS
    ops.device_memory = 0
    handle = ctypes.c_uint64()
    status = lib.normuon_comm_create_custom(ctypes.byref(ops), ctypes.byref(handle))
    if status != _capi.Status.SUCCESS:
        _destroy(ctx)  # not taken over on failure
        _capi.check_comm(status, 0, "normuon_comm_create_custom")
    return handle.value
