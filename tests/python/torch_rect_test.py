"""normuon.torch.NorMuon with 2-D manual shards (rectangles) over gloo processes.

  * Replicas (HSDP), world 4 = 2 replica groups x 2 shard ranks: shard groups [0, 1] and [2, 3]
    made with dist.new_group; each process runs its own NorMuon over its shard group. w1 is
    split by rows (column-parallel), w2 and w3 by columns (row-parallel, w3 ragged), the
    vectors by rows, w2 also with num_heads. Every process computes the gradient of its own
    micro-batch; the trainer averages the full gradients over all 4 processes in rank order and
    keeps its rectangle. After 10 steps both replicas hold the same bits, and the gathered
    pieces equal one process running the model unsharded.
  * World 2, column-split (row-parallel) layout with overlap_backward=True: bitwise equal to one
    process after 20 steps.
  * Argument checks (one-rank group in this process): errors name the parameter and field.
"""

import argparse
import datetime
import os
import sys
import tempfile
import unittest

import torch

import gloo_workers
from normuon.torch import NorMuon

torch.set_num_threads(1)

SHAPES = {"w1": (16, 8), "b1": (16,), "w2": (10, 16), "b2": (10,), "w3": (3, 10)}
MATRICES = ("w1", "w2", "w3")
VECTORS = ("b1", "b2")
HEADS = {"w2": 2}
MICRO_BATCH = 8


def full_params():
    g = torch.Generator().manual_seed(0)
    return {n: torch.randn(s, generator=g) * 0.3 for n, s in SHAPES.items()}


def micro_batch(step, index):
    g = torch.Generator().manual_seed(1000 + 31 * step + index)
    return torch.randn(MICRO_BATCH, 8, generator=g), torch.randint(0, 3, (MICRO_BATCH,),
                                                                      generator=g)


def loss_of(p, x, y):
    h = torch.tanh(x @ p["w1"].t() + p["b1"])
    h = torch.tanh(h @ p["w2"].t() + p["b2"])
    return torch.nn.functional.cross_entropy(h @ p["w3"].t(), y)


def split(n, parts, ragged):
    """(begin, count) of each of `parts` ranges of n; ragged: the first one a row larger."""
    base = n // parts
    counts = [base] * parts
    counts[-1] += n - base * parts
    if ragged and parts > 1 and counts[-1] > 1:
        counts[0] += 1
        counts[-1] -= 1
    begins = [sum(counts[:i]) for i in range(parts)]
    return list(zip(begins, counts))


def rectangle(name, shard, shards):
    """(row_begin, row_count, col_begin, col_count) of shard index `shard` of `shards`."""
    shape = SHAPES[name]
    if name in ("w2", "w3"):  # row-parallel: split by columns
        cb, cc = split(shape[1], shards, ragged=(name == "w3"))[shard]
        return 0, shape[0], cb, cc
    rb, rc = split(shape[0], shards, ragged=False)[shard]
    return rb, rc, 0, (shape[1] if len(shape) > 1 else 1)


def piece(t, name, shard, shards):
    rb, rc, cb, cc = rectangle(name, shard, shards)
    return (t[rb:rb + rc, cb:cb + cc] if t.dim() == 2 else t[rb:rb + rc]).clone()


def shard_entry(name, shard, shards):
    rb, _, cb, _ = rectangle(name, shard, shards)
    e = {"global_shape": SHAPES[name], "row_begin": rb}
    if len(SHAPES[name]) == 2:
        e["col_begin"] = cb
    if name in HEADS:
        e["num_heads"] = HEADS[name]
    return e


def make_optimizer(named, shards=None, **kw):
    groups = [{"params": [(n, named[n]) for n in MATRICES], "use_muon": True, "lr": 0.02,
               "weight_decay": 0.01},
              {"params": [(n, named[n]) for n in VECTORS], "use_muon": False, "lr": 3e-3,
               "weight_decay": 0.01}]
    return NorMuon(groups, shards=shards, **kw)


def ordered_mean(parts):
    total = parts[0].clone()
    for t in parts[1:]:
        total += t
    return total.div_(len(parts))


def reference_run(world, steps):
    params = {n: torch.nn.Parameter(t) for n, t in full_params().items()}
    # One rank holding every piece whole (w2 with the same num_heads): `shards` at world 1.
    opt = make_optimizer(params, {n: shard_entry(n, 0, 1) for n in SHAPES})
    losses = []
    for step in range(steps):
        grads = {n: [] for n in params}
        for r in range(world):
            x, y = micro_batch(step, r)
            loss = loss_of(params, x, y)
            for n, g in zip(SHAPES, torch.autograd.grad(loss, [params[n] for n in SHAPES])):
                grads[n].append(g)
            if r == 0:
                losses.append(loss.item())
        for n in params:
            params[n].grad = ordered_mean(grads[n])
        opt.step()
    return {n: t.detach().clone() for n, t in params.items()}, losses


# --- worker ---------------------------------------------------------------------------------


class _Assemble(torch.autograd.Function):
    """Forward: the full tensor from the shard group's pieces (zeros + one piece each: exact
    sums). Backward: every process's full gradient (all replicas and shards), averaged in rank
    order, and this rank's piece of it."""

    @staticmethod
    def forward(ctx, local, name, shard, shards, group, world):
        import torch.distributed as dist
        t = torch.zeros(SHAPES[name])
        rb, rc, cb, cc = rectangle(name, shard, shards)
        if t.dim() == 2:
            t[rb:rb + rc, cb:cb + cc] = local
        else:
            t[rb:rb + rc] = local
        dist.all_reduce(t, group=group)
        ctx.name, ctx.shard, ctx.shards, ctx.world = name, shard, shards, world
        return t

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist
        grad = grad.contiguous()
        parts = [torch.empty_like(grad) for _ in range(ctx.world)]
        dist.all_gather(parts, grad)
        return (piece(ordered_mean(parts), ctx.name, ctx.shard, ctx.shards),
                None, None, None, None, None)



def worker(args):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{args.store}", rank=args.rank,
                            world_size=args.world, timeout=datetime.timedelta(seconds=60))
    rank, world, shards_n = args.rank, args.world, args.shards
    groups = [dist.new_group(ranks=list(range(s, s + shards_n)))
              for s in range(0, world, shards_n)]  # every process makes every group
    group = groups[rank // shards_n]
    shard = rank % shards_n
    full = full_params()
    local = {n: torch.nn.Parameter(piece(t, n, shard, shards_n)) for n, t in full.items()}
    entries = {local[n]: shard_entry(n, shard, shards_n) for n in SHAPES}
    kw = {}
    if args.overlap:
        kw.update(overlap_backward=True, bucket_bytes=256)
    opt = make_optimizer(local, entries, process_group=group, comm_timeout=60, **kw)
    losses = []
    for step in range(args.steps):
        opt.zero_grad(set_to_none=True)
        fulls = {n: _Assemble.apply(local[n], n, shard, shards_n, group, world)
                 for n in SHAPES}
        x, y = micro_batch(step, rank)
        loss = loss_of(fulls, x, y)
        loss.backward()  # with overlap_backward, the hooks hand matrices to the runtime
        losses.append(loss.item())
        opt.step()
    torch.save({"params": {n: t.detach() for n, t in local.items()}, "losses": losses},
               os.path.join(args.out, f"rank{rank}.pt"))
    del opt
    dist.destroy_process_group()


# --- tests ------------------------------------------------------------------------------------


def launch(world, shards, steps, overlap, out):
    return gloo_workers.run_workers(
        __file__, world, [f"--shards={shards}", f"--steps={steps}"] +
        (["--overlap"] if overlap else []), out)


_TMP = None


def setUpModule():
    """A one-rank gloo group in this process: the references (num_heads needs `shards`) and the
    argument checks use it."""
    import torch.distributed as dist
    global _TMP
    _TMP = tempfile.TemporaryDirectory()
    dist.init_process_group("gloo", init_method=f"file://{_TMP.name}/store", rank=0,
                            world_size=1)


def tearDownModule():
    import torch.distributed as dist
    dist.destroy_process_group()
    _TMP.cleanup()


class RectangleTrainingTest(unittest.TestCase):
    def run_layout(self, world, shards, steps, overlap):
        with tempfile.TemporaryDirectory() as out:
            codes, logs = launch(world, shards, steps, overlap, out)
            for r in range(world):
                self.assertEqual(codes[r], 0, logs[r])
            saved = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(world)]
        ref, ref_losses = reference_run(world, steps)
        for r in range(world):
            shard = r % shards
            for n in SHAPES:
                self.assertTrue(torch.equal(saved[r]["params"][n],
                                            piece(ref[n], n, shard, shards)),
                                f"rank {r}'s piece of {n} differs from one process")
        self.assertEqual(saved[0]["losses"], ref_losses)
        self.assertLess(ref_losses[-1], ref_losses[0])  # it trains
        return saved

    def test_two_replicas_of_two_shards(self):
        saved = self.run_layout(world=4, shards=2, steps=10, overlap=False)
        for r in (0, 1):  # replica 0 (ranks 0, 1) and replica 1 (ranks 2, 3): same bits
            for n in SHAPES:
                self.assertTrue(torch.equal(saved[r]["params"][n], saved[r + 2]["params"][n]),
                                f"replicas differ on {n} (ranks {r} and {r + 2})")

    def test_world2_column_split_overlap_backward(self):
        self.run_layout(world=2, shards=2, steps=20, overlap=True)


class RectangleArgumentTest(unittest.TestCase):
    def refused(self, name, local_shape, entry, *fragments):
        p = {n: torch.nn.Parameter(t) for n, t in full_params().items()}
        p[name] = torch.nn.Parameter(torch.zeros(local_shape))
        shards = {n: shard_entry(n, 0, 1) for n in SHAPES}
        shards[name] = entry
        with self.assertRaises((ValueError, TypeError)) as cm:
            make_optimizer(p, shards)
        for f in (f"'{name}'",) + fragments:
            self.assertIn(f, str(cm.exception))

    def test_col_begin_out_of_range(self):
        self.refused("w1", (16, 2), ((16, 8), 0, 8), "col_begin", "out of range")

    def test_rectangle_exceeds_global_shape(self):
        self.refused("w1", (16, 4), ((16, 8), 0, 6), "col_begin", "exceeds")

    def test_negative_col_begin(self):
        self.refused("w2", (10, 4), ((10, 16), 0, -1), "col_begin")

    def test_adamw_must_be_whole_rows(self):
        self.refused("b1", (16,), {"global_shape": (16,), "row_begin": 0, "col_begin": 0},
                     "col_begin")

    def test_bad_num_heads(self):
        self.refused("w2", (10, 16), {"global_shape": (10, 16), "row_begin": 0,
                                      "num_heads": 3}, "num_heads", "divide")
        self.refused("w2", (10, 16), {"global_shape": (10, 16), "row_begin": 0,
                                      "num_heads": -1}, "num_heads")

    def test_tuple_rectangle_runs_at_world_one(self):
        p = {n: torch.nn.Parameter(t) for n, t in full_params().items()}
        shards = {p[n]: ((SHAPES[n], 0, 0) if len(SHAPES[n]) == 2 else (SHAPES[n], 0))
                  for n in SHAPES}
        opt = make_optimizer(p, shards)
        before = p["w2"].detach().clone()
        x, y = micro_batch(0, 0)
        loss_of(p, x, y).backward()
        opt.step()
        self.assertFalse(torch.equal(before, p["w2"]))


class SeveralPiecesTest(unittest.TestCase):
    """Several rectangles of one matrix stacked along dim 0 of the local tensor ("pieces"), at
    world 1: w1's two row halves in reverse order, w2's rows as two column halves each (four
    pieces of 10 x 8, stacked). The run must equal the unsharded one bitwise, and so must the
    state, in piece order."""

    W1 = [(8, 8, 0), (0, 8, 0)]
    W2 = [(0, 5, 0), (0, 5, 8), (5, 5, 0), (5, 5, 8)]

    @staticmethod
    def stack(t, pieces, width):
        return torch.cat([t[rb:rb + rc, cb:cb + width] for rb, rc, cb in pieces]).clone()

    def test_pieces_match_one_whole_tensor(self):
        ref = {n: torch.nn.Parameter(t) for n, t in full_params().items()}
        ref_opt = make_optimizer(ref, {n: ((SHAPES[n], 0, 0) if len(SHAPES[n]) == 2
                                           else (SHAPES[n], 0)) for n in SHAPES})
        full = full_params()
        mine = {n: torch.nn.Parameter(t.clone()) for n, t in full.items()}
        mine["w1"] = torch.nn.Parameter(self.stack(full["w1"], self.W1, 8))
        mine["w2"] = torch.nn.Parameter(self.stack(full["w2"], self.W2, 8))
        shards = {n: ((SHAPES[n], 0, 0) if len(SHAPES[n]) == 2 else (SHAPES[n], 0))
                  for n in SHAPES}
        shards["w1"] = {"global_shape": SHAPES["w1"], "pieces": self.W1}
        shards["w2"] = {"global_shape": SHAPES["w2"], "pieces": self.W2}
        opt = make_optimizer(mine, shards)
        for step in range(3):
            x, y = micro_batch(step, 0)
            for params, o in ((ref, ref_opt), (mine, opt)):
                o.zero_grad(set_to_none=True)
                if params is mine:  # the whole tensors' gradient, restacked into the pieces
                    whole = {n: torch.nn.Parameter(ref_before[n]) for n in SHAPES}
                    loss_of(whole, x, y).backward()
                    for n in SHAPES:
                        g = whole[n].grad
                        if n == "w1":
                            g = self.stack(g, self.W1, 8)
                        elif n == "w2":
                            g = self.stack(g, self.W2, 8)
                        params[n].grad = g
                else:
                    ref_before = {n: t.detach().clone() for n, t in params.items()}
                    loss_of(params, x, y).backward()
                o.step()
        self.assertTrue(torch.equal(mine["w1"], self.stack(ref["w1"].detach(), self.W1, 8)))
        self.assertTrue(torch.equal(mine["w2"], self.stack(ref["w2"].detach(), self.W2, 8)))
        self.assertTrue(torch.equal(mine["w3"], ref["w3"]))
        # The state in piece order: w2 (parameter 1) momentum as the stacked pieces, v one
        # value per row of each piece.
        got, want = opt.state_dict()["state"][1], ref_opt.state_dict()["state"][1]
        self.assertTrue(torch.equal(got["momentum_buffer"],
                                    self.stack(want["momentum_buffer"], self.W2, 8)))
        v = want["second_momentum_buffer"]
        self.assertTrue(torch.equal(got["second_momentum_buffer"],
                                    torch.cat([v[0:5], v[0:5], v[5:10], v[5:10]])))

    def test_pieces_are_checked(self):
        p = {n: torch.nn.Parameter(t) for n, t in full_params().items()}
        p["w1"] = torch.nn.Parameter(torch.zeros(12, 8))
        shards = {n: shard_entry(n, 0, 1) for n in SHAPES}
        shards["w1"] = {"global_shape": (16, 8), "pieces": [(0, 8, 0), (8, 8, 0)]}
        with self.assertRaises(ValueError) as cm:
            make_optimizer(p, shards)
        self.assertIn("'w1'", str(cm.exception))
        self.assertIn("16 rows in all, but the local tensor has 12", str(cm.exception))
        shards["w1"] = {"global_shape": (16, 8), "pieces": [(0, 8, 0), (8, 4, 1)]}
        with self.assertRaises(ValueError) as cm:
            make_optimizer(p, shards)
        self.assertIn("pieces[1]", str(cm.exception))
        shards["w1"] = {"global_shape": (16, 8), "pieces": [(0, 8, 0)], "row_begin": 0}
        with self.assertRaises(ValueError) as cm:
            make_optimizer(p, shards)
        self.assertIn("together with 'pieces'", str(cm.exception))


def _main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--rank", type=int)
    parser.add_argument("--world", type=int)
    parser.add_argument("--shards", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--store")
    parser.add_argument("--out")
    parser.add_argument("--overlap", action="store_true")
    args, rest = parser.parse_known_args()
    if args.worker:
        worker(args)
    else:
        unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    _main()
