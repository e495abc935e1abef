"""normuon.torch.NorMuon sharded over real processes joined by torch.distributed (gloo).

Each test starts its ranks as separate Python processes (this file with --worker, a file://
rendezvous in a temporary directory) and checks what they write back:
  * Training (world 2 and 4, with and without overlap_backward; one launch per world size runs
    both trainings one after the other, each with its own optimizer): an FSDP-style trainer. Each
    rank holds a block of rows of every parameter (FSDP's ceil(m/P) chunks, so at world 4 one
    matrix has an empty rank) as its optimizer's parameters, passed with `shards`; the forward
    pass all-gathers the full tensors; every rank computes the gradient of its own micro-batch,
    and the backward pass all-gathers the full gradients, sums them in rank order and keeps its
    rows (a reduce-scatter). After 20 steps every rank's rows of every parameter and of the
    optimizer state are bitwise equal to one process that runs the same model unsharded on the
    same micro-batches (gradients summed in the same order), and so is every micro-batch's loss
    at every step.
  * Faults (world 3): one rank SIGKILLed inside a step (in its first exchange); one rank that
    stops calling step; one rank started with another global shape. Every surviving rank's
    step raises within timeout + 30 s, with the same parameters and optimizer state after as
    before (checksums), and the survivors exit cleanly. No process is left behind.

Run by Bazel (//tests/python:torch_gloo_test) with Debian's /usr/bin/python3 and
$NORMUON_LIBRARY pointing at the built libnormuon.so.
"""

import argparse
import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import torch

from normuon.torch import NorMuon

torch.set_num_threads(1)

# name -> global shape; the last matrix has 3 rows: at world 4 rank 3 holds none of it.
SHAPES = {"w1": (16, 8), "b1": (16,), "w2": (10, 16), "b2": (10,), "w3": (3, 10)}
MATRICES = ("w1", "w2", "w3")
VECTORS = ("b1", "b2")
MICRO_BATCH = 8
STEPS = 20
HYPER = dict(lr=0.02, weight_decay=0.01)
ADAMW = dict(lr=3e-3, weight_decay=0.01)


def full_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) * 0.3 for n, s in SHAPES.items()}


def micro_batch(step, index):
    """Micro-batch `index` of `step`: inputs (MICRO_BATCH, 8) and 3-class labels."""
    g = torch.Generator().manual_seed(1000 + 31 * step + index)
    x = torch.randn(MICRO_BATCH, 8, generator=g)
    y = torch.randint(0, 3, (MICRO_BATCH,), generator=g)
    return x, y


def loss_of(p, x, y):
    h = torch.tanh(x @ p["w1"].t() + p["b1"])
    h = torch.tanh(h @ p["w2"].t() + p["b2"])
    return torch.nn.functional.cross_entropy(h @ p["w3"].t(), y)


def fsdp_rows(rows, world, rank):
    chunk = -(-rows // world)
    begin = min(rank * chunk, rows)
    return begin, max(0, min(chunk, rows - begin)), chunk


def ordered_mean(parts):
    """Sum in rank order, then divide: the reference does the same operations."""
    total = parts[0].clone()
    for t in parts[1:]:
        total += t
    return total.div_(len(parts))


def make_optimizer(named, shards=None, **kw):
    groups = [{"params": [(n, named[n]) for n in MATRICES], "use_muon": True, **HYPER},
              {"params": [(n, named[n]) for n in VECTORS], "use_muon": False, **ADAMW}]
    return NorMuon(groups, shards=shards, **kw)


def reference_run(world, steps=STEPS):
    """One process, unsharded: the world's micro-batch gradients summed in rank order."""
    params = {n: torch.nn.Parameter(t) for n, t in full_params().items()}
    opt = make_optimizer(params)
    losses = []
    for step in range(steps):
        grads, step_losses = {n: [] for n in params}, []
        for r in range(world):
            x, y = micro_batch(step, r)
            loss = loss_of(params, x, y)
            gs = torch.autograd.grad(loss, [params[n] for n in SHAPES])
            for n, g in zip(SHAPES, gs):
                grads[n].append(g)
            step_losses.append(loss.item())
        for n in params:
            params[n].grad = ordered_mean(grads[n])
        opt.step()
        losses.append(step_losses)
    state = opt.state_dict()["state"]
    names = list(MATRICES) + list(VECTORS)
    return ({n: t.detach().clone() for n, t in params.items()}, losses,
            {names[i]: s for i, s in state.items()})


def checksum(opt, params):
    h = hashlib.sha256()
    for n in sorted(params):
        h.update(params[n].detach().contiguous().numpy().tobytes())
    for i, st in sorted(opt.state_dict()["state"].items()):
        for k in sorted(st):
            h.update(st[k].detach().contiguous().numpy().tobytes())
    return h.hexdigest()


# --- the worker (one rank) -----------------------------------------------------------------


class _Gather(torch.autograd.Function):
    """Forward: the full tensor from every rank's rows. Backward: every rank's full gradient,
    summed in rank order (divided by the world), and this rank's rows of it."""

    @staticmethod
    def forward(ctx, shard, rows, world, rank):
        import torch.distributed as dist
        begin, count, chunk = fsdp_rows(rows, world, rank)
        padded = shard.new_zeros((chunk,) + tuple(shard.shape[1:]))
        padded[:count] = shard
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        ctx.rows, ctx.world, ctx.rank = rows, world, rank
        return torch.cat([parts[r][:fsdp_rows(rows, world, r)[1]] for r in range(world)])

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist
        grad = grad.contiguous()
        parts = [torch.empty_like(grad) for _ in range(ctx.world)]
        dist.all_gather(parts, grad)
        begin, count, _ = fsdp_rows(ctx.rows, ctx.world, ctx.rank)
        return ordered_mean(parts)[begin:begin + count].clone(), None, None, None


def worker(args):
    """One rank: the training run without and with overlap_backward (one after the other, each
    with its own optimizer and so its own private gloo group), or one faulty run."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{args.store}", rank=args.rank,
                            world_size=args.world, timeout=datetime.timedelta(seconds=60))
    for overlap in ((False,) if args.fault else (False, True)):
        train(args, overlap, f"rank{args.rank}_overlap{int(overlap)}")
    # Also after a failed step (a peer is gone): the runtime and the groups are torn down
    # without waiting on peers, and the process exits normally.
    dist.destroy_process_group()


def train(args, overlap, tag):
    rank, world = args.rank, args.world
    out = {"rank": rank}
    full = full_params()
    local, shards = {}, {}
    for n, t in full.items():
        begin, count, _ = fsdp_rows(t.shape[0], world, rank)
        local[n] = torch.nn.Parameter(t[begin:begin + count].clone())
        shape = list(t.shape)
        if args.fault == "shape" and rank == 1 and n == "w2":
            shape[0] += 1  # a rank started with another model config
        shards[local[n]] = (tuple(shape), begin)
    kw = dict(comm_timeout=args.timeout, overlap_backward=overlap)
    if overlap:
        kw.update(bucket_bytes=256)  # several buckets: exchanges start during backward
    opt = make_optimizer(local, shards, **kw)
    if args.fault == "kill" and rank == 1:
        from normuon import _dist_comm
        original = _dist_comm._GlooComm.exchange
        steps_seen = {"step": 0}

        def exchange(self, *a):
            if steps_seen["step"] == args.fault_step:
                with open(os.path.join(args.out, "victim_in_step"), "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(600)  # the test kills this process here, inside the step
            return original(self, *a)
        _dist_comm._GlooComm.exchange = exchange
    losses = []
    for step in range(args.steps):
        if args.fault == "kill" and rank == 1:
            steps_seen["step"] = step
        faulty = bool(args.fault) and step == args.fault_step
        if faulty:
            before = checksum(opt, local)
        x, y = micro_batch(step, rank)
        opt.zero_grad(set_to_none=True)
        gathered = {n: _Gather.apply(local[n], SHAPES[n][0], world, rank) for n in SHAPES}
        loss = loss_of(gathered, x, y)
        loss.backward()
        losses.append(loss.item())
        if not faulty:
            opt.step()
            continue
        if rank == 1 and args.fault == "stop":
            with open(os.path.join(args.out, "victim_in_step"), "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)  # stops calling step; the test kills it
        start = time.monotonic()
        try:
            opt.step()
            out["error"] = None
        except Exception as e:  # noqa: BLE001  (reported to the test)
            out["error"] = f"{type(e).__name__}: {e}"
            out["error_types"] = [c.__name__ for c in type(e).__mro__]
        out["seconds"] = time.monotonic() - start
        out["unchanged"] = checksum(opt, local) == before
        break
    out["losses"] = losses
    if not args.fault:
        torch.save({"params": {n: t.detach() for n, t in local.items()},
                    "state": opt.state_dict()["state"]},
                    os.path.join(args.out, f"{tag}.pt"))
    with open(os.path.join(args.out, f"{tag}.json"), "w") as f:
        json.dump(out, f)


# --- the tests ---------------------------------------------------------------------------


class _Ranks:
    """world worker processes of this file; kill() ends every one still running."""

    def __init__(self, world, out, **opts):
        self.out = out
        store = os.path.join(out, "store")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.procs = []
        for r in range(world):
            cmd = [sys.executable, "-B", os.path.abspath(__file__), "--worker", f"--rank={r}",
                   f"--world={world}", f"--store={store}", f"--out={out}"]
            for k, v in opts.items():
                if v is True:
                    cmd.append(f"--{k}")
                elif v is not None and v is not False:
                    cmd.append(f"--{k}={v}")
            log = open(os.path.join(out, f"rank{r}.log"), "w")
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=log,
                                               stderr=subprocess.STDOUT))
            log.close()

    def wait(self, ranks, timeout):
        deadline = time.monotonic() + timeout
        for r in ranks:
            left = max(0.1, deadline - time.monotonic())
            try:
                self.procs[r].wait(timeout=left)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"rank {r} still running after {timeout} s:\n"
                                     f"{self.log(r)}") from None

    def log(self, r):
        with open(os.path.join(self.out, f"rank{r}.log")) as f:
            return f.read()[-4000:]

    def result(self, r, overlap=False):
        path = os.path.join(self.out, f"rank{r}_overlap{int(overlap)}.json")
        if not os.path.exists(path):
            raise AssertionError(f"rank {r} wrote no result:\n{self.log(r)}")
        with open(path) as f:
            return json.load(f)

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(timeout=30)


class GlooTrainingTest(unittest.TestCase):
    """One launch per world size runs both trainings (without, then with overlap_backward);
    each test checks one of them."""
    reference = {}
    launched = {}  # world -> (temporary directory, _Ranks)

    @classmethod
    def tearDownClass(cls):
        for tmp, _ in cls.launched.values():
            tmp.cleanup()

    def launch(self, world):
        if world not in self.launched:
            tmp = tempfile.TemporaryDirectory()
            ranks = _Ranks(world, tmp.name, steps=STEPS, timeout=60)
            self.launched[world] = (tmp, ranks)
            try:
                ranks.wait(range(world), 300)
            finally:
                ranks.kill()
        return self.launched[world]

    def run_world(self, world, overlap):
        if world not in self.reference:
            self.reference[world] = reference_run(world)
        ref_params, ref_losses, ref_state = self.reference[world]
        tmp, ranks = self.launch(world)
        out = tmp.name
        for r in range(world):
            self.assertEqual(ranks.procs[r].returncode, 0, ranks.log(r))
            res = ranks.result(r, overlap)
            saved = torch.load(os.path.join(out, f"rank{r}_overlap{int(overlap)}.pt"))
            for n, full in ref_params.items():
                begin, count, _ = fsdp_rows(full.shape[0], world, r)
                self.assertTrue(torch.equal(saved["params"][n], full[begin:begin + count]),
                                f"world {world} overlap {overlap}: rank {r}'s rows of {n} "
                                f"differ from the single process after {STEPS} steps")
            names = list(MATRICES) + list(VECTORS)
            for i, st in saved["state"].items():
                n = names[i]
                begin, count, _ = fsdp_rows(SHAPES[n][0], world, r)
                for k, v in st.items():
                    want = ref_state[n][k]
                    want = want if k == "step" else want[begin:begin + count]
                    self.assertTrue(torch.equal(v, want),
                                    f"world {world}: rank {r}'s {k} of {n} differs")
            self.assertEqual([l_ for l_ in res["losses"]],
                             [step[r] for step in ref_losses],
                             f"world {world}: rank {r}'s loss curve differs")
        # Sanity: the run trains (the comparison is not between two frozen models).
        first = sum(ref_losses[0]) / world
        last = sum(ref_losses[-1]) / world
        self.assertLess(last, first)

    def test_world2(self):
        self.run_world(2, overlap=False)

    def test_world4(self):
        self.run_world(4, overlap=False)

    def test_world2_overlap_backward(self):
        self.run_world(2, overlap=True)

    def test_world4_overlap_backward(self):
        self.run_world(4, overlap=True)


class GlooFaultTest(unittest.TestCase):
    WORLD = 3
    FAULT_STEP = 2

    def run_fault(self, fault, timeout, expect_types, expect_text):
        with tempfile.TemporaryDirectory() as out:
            start = time.monotonic()
            ranks = _Ranks(self.WORLD, out, steps=5, timeout=timeout, fault=fault,
                           fault_step=self.FAULT_STEP if fault != "shape" else 0)
            survivors = [0, 2] if fault != "shape" else [0, 1, 2]
            try:
                if fault in ("kill", "stop"):
                    marker = os.path.join(out, "victim_in_step")
                    deadline = time.monotonic() + 120
                    while not os.path.exists(marker):
                        if time.monotonic() > deadline or ranks.procs[1].poll() is not None:
                            raise AssertionError(f"rank 1 never reached the faulty step:\n"
                                                 f"{ranks.log(1)}")
                        time.sleep(0.05)
                    time.sleep(0.3)
                    if fault == "kill":
                        os.kill(ranks.procs[1].pid, signal.SIGKILL)
                ranks.wait(survivors, 120 + timeout)
            finally:
                ranks.kill()
            elapsed = time.monotonic() - start
            for r in survivors:
                self.assertEqual(ranks.procs[r].returncode, 0, ranks.log(r))
                res = ranks.result(r)
                self.assertIsNotNone(res["error"], f"{fault}: rank {r}'s step did not fail")
                self.assertTrue(any(t in res["error_types"] for t in expect_types),
                                f"{fault}: rank {r}: {res['error']}")
                self.assertIn(expect_text, res["error"], f"rank {r}")
                self.assertLess(res["seconds"], timeout + 30, res["error"])
                self.assertTrue(res["unchanged"], f"{fault}: rank {r}'s parameters or "
                                f"optimizer state changed in the failed step")
            if fault == "kill":
                self.assertEqual(ranks.procs[1].returncode, -signal.SIGKILL)
            for p in ranks.procs:
                self.assertIsNotNone(p.poll(), "a rank process is still running")
            return elapsed

    def test_sigkill_of_a_rank_inside_a_step(self):
        # A dead peer closes its connections: the survivors fail at once, not at the timeout.
        self.run_fault("kill", 30, ["CommError"], "gloo failed")

    def test_a_rank_that_stops_calling_step(self):
        self.run_fault("stop", 3, ["NorMuonTimeoutError"], "not complete after 3 s")

    def test_a_rank_with_another_global_shape(self):
        self.run_fault("shape", 10, ["NorMuonError"], "w2")


class _FakeWork:
    """A torch.distributed Work stand-in: completes after `slices` waits with a timeout (the
    wait that sees it complete still raises "Operation timed out!", as when completion lands
    just after a slice ends), with `error` as its outcome; never, if slices is None."""

    def __init__(self, slices, error=None):
        self.slices, self.error, self.waits, self.done = slices, error, [], False

    def wait(self, timeout=None):
        self.waits.append(timeout)
        if timeout is None or self.done:
            if not self.done:
                raise AssertionError("an unbounded wait on a work that is not complete")
            if self.error:
                raise RuntimeError(self.error)
            return True
        if timeout.total_seconds() * 1000 < 1:
            raise AssertionError(f"a wait of {timeout}: torch reads 0 ms as no timeout")
        if self.slices is not None and len(self.waits) >= self.slices:
            self.done = True
        raise RuntimeError("Operation timed out!")

    def is_completed(self):
        return self.done


class AdapterWaitTest(unittest.TestCase):
    """_GlooComm._wait's reading of torch's Work: a slice that ends as the work completes, a
    work that failed, a work that never completes, and abort."""

    def comm(self, timeout=0.3):
        from normuon import _dist_comm
        return _dist_comm._GlooComm(None, 0, 2, timeout), _dist_comm._Failure

    def test_completion_at_the_end_of_a_slice_is_success(self):
        comm, _ = self.comm()
        work = _FakeWork(slices=1)
        comm._wait(work, "test", [])
        self.assertEqual(len(work.waits), 2)

    def test_a_failed_work_is_a_comm_error_with_gloo_message(self):
        from normuon import _capi
        comm, failure = self.comm()
        with self.assertRaises(failure) as cm:
            comm._wait(_FakeWork(slices=2, error="Connection closed by peer"), "test", [])
        self.assertEqual(cm.exception.status, _capi.Status.ERROR_COMM)
        self.assertIn("Connection closed by peer", str(cm.exception))

    def test_gloo_timeout_is_a_timeout(self):
        from normuon import _capi
        comm, failure = self.comm()
        with self.assertRaises(failure) as cm:
            comm._wait(_FakeWork(slices=1, error="Timed out waiting 300ms for recv"), "t", [])
        self.assertEqual(cm.exception.status, _capi.Status.ERROR_TIMEOUT)

    def test_a_work_that_never_completes_times_out(self):
        from normuon import _capi
        comm, failure = self.comm(timeout=0.3)
        keep = [torch.zeros(1)]
        start = time.monotonic()
        with self.assertRaises(failure) as cm:
            comm._wait(_FakeWork(slices=None), "test", keep)
        self.assertEqual(cm.exception.status, _capi.Status.ERROR_TIMEOUT)
        self.assertLess(time.monotonic() - start, 5)
        self.assertIs(comm.keep[0], keep[0])  # staging kept alive for gloo

    def test_abort_ends_a_wait(self):
        import threading
        from normuon import _capi
        comm, failure = self.comm(timeout=60)
        threading.Timer(0.2, lambda: setattr(comm, "aborted", True)).start()
        start = time.monotonic()
        with self.assertRaises(failure) as cm:
            comm._wait(_FakeWork(slices=None), "test", [])
        self.assertEqual(cm.exception.status, _capi.Status.ERROR_COMM)
        self.assertLess(time.monotonic() - start, 5)


class ShardsArgumentTest(unittest.TestCase):
    """`shards` is checked at construction, naming the parameter and the field; nothing is
    created on an error. Runs in this process on a one-rank gloo group."""

    @classmethod
    def setUpClass(cls):
        import torch.distributed as dist
        cls.tmp = tempfile.TemporaryDirectory()
        dist.init_process_group("gloo", init_method=f"file://{cls.tmp.name}/store", rank=0,
                                world_size=1)

    @classmethod
    def tearDownClass(cls):
        import torch.distributed as dist
        dist.destroy_process_group()
        cls.tmp.cleanup()

    def params(self):
        return {n: torch.nn.Parameter(t) for n, t in full_params().items()}

    def good(self, p):
        return {p[n]: (SHAPES[n], 0) for n in SHAPES}

    def assert_refused(self, shards, *fragments, error=ValueError, p=None):
        p = p or self.params()
        with self.assertRaises(error) as cm:
            make_optimizer(p, shards(p) if callable(shards) else shards)
        for f in fragments:
            self.assertIn(f, str(cm.exception))

    def test_world_one_runs_and_matches_unsharded(self):
        p, q = self.params(), self.params()
        a, b = make_optimizer(p, self.good(p)), make_optimizer(q)
        for step in range(3):
            x, y = micro_batch(step, 0)
            for params, opt in ((p, a), (q, b)):
                opt.zero_grad()
                loss_of(params, x, y).backward()
                opt.step()
        for n in SHAPES:
            self.assertTrue(torch.equal(p[n], q[n]), n)

    def test_names_work_as_keys(self):
        p = self.params()
        make_optimizer(p, {n: {"global_shape": SHAPES[n], "row_begin": 0} for n in SHAPES})

    def test_a_parameter_without_an_entry(self):
        def shards(p):
            s = self.good(p)
            del s[p["w2"]]
            return s
        self.assert_refused(shards, "'w2'", "no entry in shards")

    def test_an_entry_for_no_parameter(self):
        def shards(p):
            s = self.good(p)
            s["nope"] = ((3, 3), 0)
            return s
        self.assert_refused(shards, "'nope'", "not parameters")

    def test_unknown_keys_are_refused(self):
        def shards(p):
            s = self.good(p)
            s[p["w1"]] = {"global_shape": SHAPES["w1"], "row_begin": 0, "col_start": 0}
            return s
        self.assert_refused(shards, "col_start", "unknown keys")

    def test_bad_fields(self):
        for bad, fragment in ((((16, 8), -1), "row_begin"), (((16, 0), 0), "global_shape"),
                              (((16, 9), 0), "global_shape"), (((16, 8), 4), "row_begin"),
                              ((16, 8), "global_shape")):
            def shards(p, bad=bad):
                s = self.good(p)
                s[p["w1"]] = bad
                return s
            with self.subTest(bad=bad):
                self.assert_refused(shards, fragment, "'w1'", error=(ValueError, TypeError))

    def test_process_group_needs_shards(self):
        with self.assertRaises(ValueError) as cm:
            NorMuon(list(self.params().values()), process_group=object())
        self.assertIn("shards", str(cm.exception))


def _main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--rank", type=int)
    parser.add_argument("--world", type=int)
    parser.add_argument("--store")
    parser.add_argument("--out")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--fault", default=None)
    parser.add_argument("--fault_step", type=int, default=-1)
    args, rest = parser.parse_known_args()
    if args.worker:
        worker(args)
    else:
        unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    _main()
