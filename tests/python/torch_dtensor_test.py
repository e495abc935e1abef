"""normuon.torch.NorMuon with DTensor parameters on 2-D device meshes, over gloo processes.

Debian's torch 1.13 has no DTensor, so the parameters here are a stand-in: a tensor subclass
named DTensor with DTensor's API as NorMuon uses it (to_local, placements, device_mesh,
from_local) and placement classes Shard/Replicate/Partial with DTensor's methods. The front end
maps each process's placements onto a rectangle; what each process holds is computed here
independently, with torch.chunk per mesh dim.

  * TP x FSDP, mesh 2 x 2 (dp, tp), every dim sharding: matrices placed (Shard(0), Shard(0)),
    (Shard(0), Shard(1)) and (Shard(1), Shard(0)), ragged chunks, two processes holding no
    piece of w4. After 6 steps every piece equals one process running the model unsharded.
  * FSDP2 with torch's _StridedShard: a matrix whose strided placement leaves each process two
    row ranges (registered as several pieces), and a vector laid out as FSDP2 over tensor
    parallelism; bitwise equal to one process.
  * HSDP, mesh 2 x 2 (replicate, shard): two replica groups of two shard ranks, Shard(0) and
    Shard(1). Replicas end with the same bits, equal to one process.
  * state_dict of DTensor state (the second moment's column split becomes Replicate), loaded
    into a second optimizer that then continues bitwise like the first.
  * In-process: the placement -> rectangle rule, and the refusals naming the parameter.
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

SHAPES = {"w1": (16, 8), "b1": (16,), "w2": (9, 16), "b2": (9,), "w3": (3, 9), "w4": (2, 8)}
MATRICES = ("w1", "w2", "w3", "w4")
VECTORS = ("b1", "b2")
MICRO_BATCH = 8
STEPS = 6


# --- a DTensor stand-in ------------------------------------------------------------------------


class Shard:
    def __init__(self, dim):
        self.dim = dim

    def is_shard(self, dim=None):
        return dim is None or dim == self.dim

    def is_replicate(self):
        return False

    def __repr__(self):
        return f"Shard({self.dim})"


class _StridedShard(Shard):
    """FSDP2's placement over a dim tensor parallelism shards first (torch's semantics: the
    indices held so far cut into n * split_factor equal chunks; coordinate c keeps chunks
    c, c + n, c + 2n, ...)."""

    def __init__(self, dim, split_factor):
        super().__init__(dim)
        self.split_factor = split_factor

    def __repr__(self):
        return f"_StridedShard({self.dim}, {self.split_factor})"


class Replicate:
    def is_shard(self, dim=None):
        return False

    def is_replicate(self):
        return True

    def __repr__(self):
        return "Replicate()"


class Partial:
    def is_shard(self, dim=None):
        return False

    def is_replicate(self):
        return False

    def __repr__(self):
        return "Partial()"


class Mesh:
    """DeviceMesh's part NorMuon reads: the rank tensor and this process's coordinate."""

    def __init__(self, ranks, me):
        self.mesh = torch.tensor(ranks)
        self.ndim = self.mesh.dim()
        self._me = me

    def size(self):
        return self.mesh.numel()

    def get_coordinate(self):
        hit = (self.mesh == self._me).nonzero()
        return None if hit.numel() == 0 else [int(c) for c in hit[0]]


class DTensor(torch.Tensor):
    @staticmethod
    def __new__(cls, local, global_shape, mesh, placements):
        t = torch.Tensor._make_wrapper_subclass(cls, global_shape, dtype=local.dtype,
                                                device=local.device)
        t._local, t.device_mesh, t.placements = local, mesh, tuple(placements)
        return t

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise NotImplementedError(f"the DTensor stand-in has no ops ({func})")

    def to_local(self):
        return self._local

    @staticmethod
    def from_local(local, mesh, placements, run_check=False, shape=None, stride=None):
        return DTensor(local, tuple(shape), mesh, placements)


# --- layouts, computed independently of the front end ------------------------------------------


def held(shape, mesh_shape, coord, placements):
    """The (rows, cols) index ranges this coordinate holds, by torch.chunk per mesh dim."""
    idx = [torch.arange(shape[0]), torch.arange(shape[1] if len(shape) > 1 else 1)]
    for n, c, pl in zip(mesh_shape, coord, placements):
        if isinstance(pl, _StridedShard):
            chunks = torch.chunk(idx[pl.dim], n * pl.split_factor)
            idx[pl.dim] = torch.cat([chunks[c + j * n] for j in range(pl.split_factor)])
        elif isinstance(pl, Shard):
            chunks = torch.chunk(idx[pl.dim], n)
            idx[pl.dim] = chunks[c] if c < len(chunks) else idx[pl.dim][:0]
    return idx


def local_piece(t, mesh_shape, coord, placements):
    r, c = held(t.shape, mesh_shape, coord, placements)
    if t.dim() == 1:
        return t[r].clone()
    return t[r][:, c].clone()


LAYOUTS = {
    # mesh dims (dp, tp), both sharding: Megatron-style TP inside FSDP2 rows
    "tp_fsdp": {"w1": (Shard(0), Shard(0)), "b1": (Shard(0), Shard(0)),
                "w2": (Shard(0), Shard(1)), "b2": (Shard(0), Shard(0)),
                "w3": (Shard(1), Shard(0)), "w4": (Shard(0), Shard(0))},
    # torch's _StridedShard: b1 as FSDP2 lays out a tensor-parallel-sharded tensor (one range
    # per process); w1 with the strided placement on the tp dim, so each process holds two row
    # ranges of its columns (several pieces, stacked along dim 0)
    "fsdp2_strided": {"w1": (Shard(1), _StridedShard(0, 2)), "b1": (_StridedShard(0, 2), Shard(0)),
                      "w2": (Shard(0), Shard(1)), "b2": (Shard(0), Shard(0)),
                      "w3": (Shard(1), Shard(0)), "w4": (Shard(0), Shard(0))},
    # mesh dims (replica, shard): HSDP
    "hsdp": {"w1": (Replicate(), Shard(0)), "b1": (Replicate(), Shard(0)),
             "w2": (Replicate(), Shard(1)), "b2": (Replicate(), Shard(0)),
             "w3": (Replicate(), Shard(1)), "w4": (Replicate(), Shard(0))},
}
MESH = [[0, 1], [2, 3]]


def full_params():
    g = torch.Generator().manual_seed(0)
    return {n: torch.randn(s, generator=g) * 0.3 for n, s in SHAPES.items()}


def micro_batch(step, index):
    g = torch.Generator().manual_seed(2000 + 31 * step + index)
    return torch.randn(MICRO_BATCH, 8, generator=g), torch.randint(0, 3, (MICRO_BATCH,),
                                                                      generator=g)


def loss_of(p, x, y):
    h = torch.tanh(x @ p["w1"].t() + p["b1"])
    h = torch.tanh(h @ p["w2"].t() + p["b2"])
    return (torch.nn.functional.cross_entropy(h @ p["w3"].t(), y)
            + 0.1 * (x @ p["w4"].t()).pow(2).mean())


def ordered_mean(parts):
    total = parts[0].clone()
    for t in parts[1:]:
        total += t
    return total.div_(len(parts))


def full_grads(params, step, world):
    """The gradient every process's micro-batch gives, averaged in rank order."""
    grads = {n: [] for n in SHAPES}
    for r in range(world):
        x, y = micro_batch(step, r)
        ps = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        for n, g in zip(SHAPES, torch.autograd.grad(loss_of(ps, x, y), [ps[n] for n in SHAPES])):
            grads[n].append(g)
    return {n: ordered_mean(g) for n, g in grads.items()}


def make_optimizer(named):
    groups = [{"params": [(n, named[n]) for n in MATRICES], "use_muon": True, "lr": 0.02,
               "weight_decay": 0.01},
              {"params": [(n, named[n]) for n in VECTORS], "use_muon": False, "lr": 3e-3,
               "weight_decay": 0.01}]
    return NorMuon(groups, comm_timeout=60)


def reference_run(world, steps):
    params = {n: torch.nn.Parameter(t) for n, t in full_params().items()}
    opt = make_optimizer(params)
    for step in range(steps):
        for n, g in full_grads(params, step, world).items():
            params[n].grad = g
        opt.step()
    return {n: t.detach().clone() for n, t in params.items()}


# --- worker ------------------------------------------------------------------------------------


def run_layout(layout, rank, world, steps):
    import torch.distributed as dist
    mesh = Mesh(MESH, rank)
    coord = mesh.get_coordinate()
    placements = LAYOUTS[layout]
    full = full_params()
    local = {n: local_piece(t, (2, 2), coord, placements[n]) for n, t in full.items()}
    params = {n: DTensor(local[n], SHAPES[n], mesh, placements[n]) for n in SHAPES}
    opt = make_optimizer(params)
    for step in range(steps):
        # every process sees the full parameters: its own pieces summed over all processes,
        # divided by the number of holders of each element (exact: powers of two)
        assembled = {}
        for n in SHAPES:
            t = torch.zeros(SHAPES[n])
            cover = torch.zeros(SHAPES[n])
            r_idx, c_idx = held(SHAPES[n], (2, 2), coord, placements[n])
            if t.dim() == 1:
                t[r_idx] = local[n]
                cover[r_idx] = 1
            else:
                t[r_idx[:, None], c_idx] = local[n]
                cover[r_idx[:, None], c_idx] = 1
            dist.all_reduce(t)
            dist.all_reduce(cover)
            assembled[n] = t / cover
        grads = full_grads(assembled, step, world)
        for n in SHAPES:
            params[n].grad = DTensor(local_piece(grads[n], (2, 2), coord, placements[n]),
                                     SHAPES[n], mesh, placements[n])
        opt.step()
    result = {n: local[n].clone() for n in SHAPES}
    # state_dict round trip: a second optimizer over copies continues like the first
    sd = opt.state_dict()
    v2 = sd["state"][1]["second_momentum_buffer"]
    info = {"v_placements": repr(v2.placements), "v_shape": tuple(v2.shape),
            "v_local": tuple(v2.to_local().shape)}
    copies = {n: local[n].clone() for n in SHAPES}
    params2 = {n: DTensor(copies[n], SHAPES[n], mesh, placements[n]) for n in SHAPES}
    opt2 = make_optimizer(params2)
    opt2.load_state_dict(sd)
    for o, ps in ((opt, params), (opt2, params2)):
        for n in SHAPES:
            g = torch.full_like(ps[n].to_local(), 0.01)
            ps[n].grad = DTensor(g, SHAPES[n], mesh, placements[n])
        o.step()
    info["resumed_equal"] = all(torch.equal(local[n], copies[n]) for n in SHAPES)
    del opt, opt2
    return result, info


def worker(args):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{args.store}", rank=args.rank,
                            world_size=args.world, timeout=datetime.timedelta(seconds=60))
    out = {}
    for layout in LAYOUTS:
        pieces, info = run_layout(layout, args.rank, args.world, args.steps)
        out[layout] = {"params": {n: t.detach() for n, t in pieces.items()}, "info": info}
    torch.save(out, os.path.join(args.out, f"rank{args.rank}.pt"))
    dist.destroy_process_group()


# --- tests -------------------------------------------------------------------------------------


def launch(world, steps, out):
    return gloo_workers.run_workers(__file__, world, [f"--steps={steps}"], out)


class DTensorMeshTest(unittest.TestCase):
    saved = None

    @classmethod
    def setUpClass(cls):
        with tempfile.TemporaryDirectory() as out:
            codes, logs = launch(4, STEPS, out)
            cls.codes, cls.logs = codes, logs
            if all(c == 0 for c in codes):
                cls.saved = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(4)]
        cls.ref = reference_run(4, STEPS)

    def check_layout(self, layout):
        for r in range(4):
            self.assertEqual(self.codes[r], 0, self.logs[r])
        for r in range(4):
            coord = Mesh(MESH, r).get_coordinate()
            for n in SHAPES:
                want = local_piece(self.ref[n], (2, 2), coord, LAYOUTS[layout][n])
                got = self.saved[r][layout]["params"][n]
                self.assertEqual(tuple(got.shape), tuple(want.shape), f"{layout} {n} rank {r}")
                self.assertTrue(torch.equal(got, want),
                                f"{layout}: rank {r}'s piece of {n} differs from one process")
            self.assertTrue(self.saved[r][layout]["info"]["resumed_equal"],
                            f"{layout}: rank {r} did not continue bitwise after load_state_dict")

    def test_tp_x_fsdp(self):
        self.check_layout("tp_fsdp")
        # w4 (2 rows over 2 x 2 row chunks): the tp = 1 processes hold nothing of it
        for r in (1, 3):
            self.assertEqual(self.saved[r]["tp_fsdp"]["params"]["w4"].numel(), 0)
        # the second moment of w2 (rows x 1): Shard(1) on tp becomes Replicate
        info = self.saved[0]["tp_fsdp"]["info"]
        self.assertEqual(info["v_placements"], "(Shard(0), Replicate())")
        self.assertEqual(info["v_shape"], (9, 1))
        self.assertEqual(info["v_local"], (5, 1))

    def test_fsdp2_strided_shards(self):
        self.check_layout("fsdp2_strided")
        # w1 (16 x 8) under (Shard(1), _StridedShard(0, 2)): 8 rows in two ranges per process
        for r in range(4):
            self.assertEqual(tuple(self.saved[r]["fsdp2_strided"]["params"]["w1"].shape), (8, 4))

    def test_hsdp_replicas(self):
        self.check_layout("hsdp")
        for r in (0, 1):
            for n in SHAPES:
                self.assertTrue(torch.equal(self.saved[r]["hsdp"]["params"][n],
                                            self.saved[r + 2]["hsdp"]["params"][n]),
                                f"replicas differ on {n} (ranks {r} and {r + 2})")


class PlacementTest(unittest.TestCase):
    def test_rule_matches_torch_chunk(self):
        from normuon.torch import _dtensor_piece
        cases = [(shape, pls, mesh_shape)
                 for shape in ((7, 5), (2, 9), (16, 3), (1, 1))
                 for pls in ((Shard(0), Shard(1)), (Shard(1), Shard(0)), (Shard(0), Shard(0)),
                             (Shard(1), Shard(1)), (Replicate(), Shard(1)),
                             (Shard(0), Replicate()))
                 for mesh_shape in ((2, 2), (3, 2), (4, 1))]
        # _StridedShard needs even chunks (as in torch)
        cases += [((16, 12), pls, (2, 2))
                  for pls in ((_StridedShard(0, 2), Shard(0)), (Shard(1), _StridedShard(0, 2)),
                              (_StridedShard(1, 2), Shard(1)), (Shard(0), _StridedShard(0, 2)))]
        for shape, pls, mesh_shape in cases:
            for i in range(mesh_shape[0]):
                for j in range(mesh_shape[1]):
                    r, c = held(shape, mesh_shape, (i, j), pls)
                    runs, (cb, cc), dims = _dtensor_piece(shape, mesh_shape, (i, j), pls, "t")
                    got_rows = [x for rb, rc in runs for x in range(rb, rb + rc)]
                    self.assertEqual(got_rows, [int(x) for x in r], (shape, pls, i, j))
                    self.assertEqual(list(range(cb, cb + cc)), [int(x) for x in c])
                    self.assertEqual(dims, tuple(k for k, p in enumerate(pls)
                                                 if isinstance(p, Shard)))
        # (Shard(1), _StridedShard(0, 2)) on (2, 2): two row ranges per process
        runs, _, _ = _dtensor_piece((16, 12), (2, 2), (0, 1), (Shard(1), _StridedShard(0, 2)), "t")
        self.assertEqual(runs, [(4, 4), (12, 4)])

    def test_uneven_strided_refused(self):
        from normuon.torch import _dtensor_piece
        with self.assertRaises(NotImplementedError) as cm:
            _dtensor_piece((9, 4), (2, 2), (0, 0), (_StridedShard(0, 2), Shard(0)), "'wq'")
        self.assertIn("uneven", str(cm.exception))

    def refused(self, shape, placements, *fragments, local=None):
        mesh = Mesh([[0]], 0) if len(placements) == 2 else Mesh([0], 0)
        mesh.mesh = torch.zeros([1] * len(placements), dtype=torch.int64)
        mesh.ndim = len(placements)
        t = local if local is not None else torch.zeros(shape)
        p = DTensor(t, shape, mesh, placements)
        with self.assertRaises((ValueError, NotImplementedError)) as cm:
            NorMuon([{"params": [("wq", p)], "use_muon": True}])
        for f in ("'wq'",) + fragments:
            self.assertIn(f, str(cm.exception))

    def test_partial_refused(self):
        self.refused((4, 4), (Partial(), Shard(0)), "Partial()", "mesh dim 0")

    def test_shard1_of_3d_refused(self):
        self.refused((2, 3, 4), (Shard(1),), "Shard(1)", "rectangle")

    def test_different_shard_groups_refused(self):
        # mesh 1 x 2 (this process and a second one): a matrix sharded over mesh dim 1 only
        # and one sharded over both dims belong to different shard groups
        mesh = Mesh([[0, 1]], 0)
        a = DTensor(torch.zeros(2, 4), (4, 4), mesh, (Replicate(), Shard(0)))
        b = DTensor(torch.zeros(2, 4), (4, 4), mesh, (Shard(0), Shard(0)))
        opt = NorMuon([{"params": [("wa", a), ("wb", b)], "use_muon": True}])
        for p in (a, b):
            p.grad = DTensor(torch.zeros(2, 4), (4, 4), mesh, p.placements)
        with self.assertRaises(ValueError) as cm:
            opt.step()
        for f in ("'wa'", "'wb'", "different", "their own NorMuon"):
            self.assertIn(f, str(cm.exception))

    def test_local_shape_checked(self):
        self.refused((4, 6), (Shard(0), Shard(1)), "local shard shape", local=torch.zeros(4, 5))


def _main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--rank", type=int)
    parser.add_argument("--world", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--store")
    parser.add_argument("--out")
    args, rest = parser.parse_known_args()
    if args.worker:
        worker(args)
    else:
        unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    _main()
