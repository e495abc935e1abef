"""normuon.torch.NorMuon on CUDA tensors (the runtime's CUDA backend) against the same optimizer
on CPU tensors (the CPU backend), step by step.

Every test skips, saying so, when torch sees no CUDA device or the library was built without
CUDA (CI has no GPU). On the GPU machine: tools/device_check.sh runs this file with that machine's
PyTorch and the packed libnormuon.so.

Tolerances (docs/ARCHITECTURE.md section 6): with fp32 Newton-Schulz the CUDA update matches the CPU update
to ||cuda - cpu|| <= 1e-4 ||cpu|| (cuBLAS and OpenBLAS sum in different orders); with the CUDA
default, bf16 Newton-Schulz, to 7e-2 (bf16 operands).
"""

import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from normuon import _capi  # noqa: E402
from normuon.torch import NorMuon  # noqa: E402


def cuda_or_skip(test):
    if not torch.cuda.is_available():
        test.skipTest("no CUDA device visible to torch: the CUDA front end is not exercised")
    if not _capi.lib().normuon_has_cuda():
        test.skipTest(f"{_capi.library_path()} was built without CUDA")


def make_mlp(seed, device):
    """16 -> 64 -> 96 -> 4: a tall (64x16), a tall (96x64) and a wide (4x96) matrix, 3 biases."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, 96), torch.nn.Tanh(),
        torch.nn.Linear(96, 4))
    return net.to(device)


def grads_for(step, net):
    """Gradients that depend only on the step and the parameter's shape (same on every device)."""
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=g) * 0.1 for p in net.parameters()]


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


class CudaAgainstCpuTest(unittest.TestCase):
    def run_pair(self, ns_dtype, steps, tol, **kw):
        cuda_or_skip(self)
        nets = {d: make_mlp(0, d) for d in ("cpu", "cuda")}
        opts = {d: NorMuon(n.parameters(), lr=0.02, weight_decay=0.01, ns_dtype=ns_dtype, **kw)
                for d, n in nets.items()}
        for step in range(steps):
            before = [p.detach().cpu().clone() for p in nets["cpu"].parameters()]
            for d, net in nets.items():
                for p, g in zip(net.parameters(), grads_for(step, net)):
                    p.grad = g.to(d)
                opts[d].step()
            torch.cuda.synchronize()
            for i, (pc, pg) in enumerate(zip(nets["cpu"].parameters(), nets["cuda"].parameters())):
                du_cpu = pc.detach() - before[i]
                du_gpu = pg.detach().cpu() - before[i]
                with self.subTest(step=step, param=i):
                    self.assertLessEqual(rel(du_gpu, du_cpu), tol)
            # Teacher forcing: both continue from the CPU parameters, so errors do not compound.
            with torch.no_grad():
                for pc, pg in zip(nets["cpu"].parameters(), nets["cuda"].parameters()):
                    pg.copy_(pc)
        return nets, opts

    def test_fp32_newton_schulz_updates_match_the_cpu_backend(self):
        self.run_pair("fp32", steps=5, tol=1e-4)

    def test_bf16_newton_schulz_updates_are_within_the_bf16_tolerance(self):
        self.run_pair("bf16", steps=5, tol=7e-2)

    def test_momentum_state_matches_the_cpu_backend(self):
        nets, opts = self.run_pair("fp32", steps=3, tol=1e-4)
        sc = opts["cpu"].state_dict()["state"]
        sg = opts["cuda"].state_dict()["state"]
        self.assertEqual(sorted(sc), sorted(sg))
        for k in sc:
            for name, v in sc[k].items():
                if not torch.is_tensor(v) or v.dim() == 0:
                    continue
                with self.subTest(param=k, state=name):
                    self.assertLessEqual(rel(sg[k][name].cpu(), v), 1e-4)


class CudaStreamTest(unittest.TestCase):
    def test_a_side_stream_gives_the_default_streams_result_bitwise(self):
        cuda_or_skip(self)
        results = []
        for use_side in (False, True):
            net = make_mlp(0, "cuda")
            opt = NorMuon(net.parameters(), lr=0.02)
            side = torch.cuda.Stream()
            for step in range(3):
                for p, g in zip(net.parameters(), grads_for(step, net)):
                    p.grad = g.cuda()
                if use_side:
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        opt.step()
                    torch.cuda.current_stream().wait_stream(side)
                else:
                    opt.step()
            torch.cuda.synchronize()
            results.append([p.detach().cpu().clone() for p in net.parameters()])
        for a, b in zip(*results):
            self.assertTrue(torch.equal(a, b))

    def test_overlap_backward_on_cuda_is_bitwise_the_plain_step(self):
        cuda_or_skip(self)
        torch.manual_seed(5)
        x = torch.randn(32, 16, device="cuda")
        results = []
        for overlap in (False, True):
            net = make_mlp(0, "cuda")
            opt = NorMuon(net.parameters(), lr=0.02, overlap_backward=overlap)
            for _ in range(3):
                opt.zero_grad()
                net(x).square().mean().backward()
                opt.step()
            torch.cuda.synchronize()
            results.append([p.detach().cpu().clone() for p in net.parameters()])
        for a, b in zip(*results):
            self.assertTrue(torch.equal(a, b))

    def test_state_dict_round_trip_on_cuda_continues_bitwise(self):
        cuda_or_skip(self)
        net = make_mlp(0, "cuda")
        opt = NorMuon(net.parameters(), lr=0.02)
        for step in range(2):
            for p, g in zip(net.parameters(), grads_for(step, net)):
                p.grad = g.cuda()
            opt.step()
        saved_params = [p.detach().clone() for p in net.parameters()]
        saved = opt.state_dict()
        net2 = make_mlp(1, "cuda")
        with torch.no_grad():
            for p, s in zip(net2.parameters(), saved_params):
                p.copy_(s)
        opt2 = NorMuon(net2.parameters(), lr=0.02)
        opt2.load_state_dict(saved)
        for step in range(2, 4):
            for n, o in ((net, opt), (net2, opt2)):
                for p, g in zip(n.parameters(), grads_for(step, n)):
                    p.grad = g.cuda()
                o.step()
        torch.cuda.synchronize()
        for a, b in zip(net.parameters(), net2.parameters()):
            self.assertTrue(torch.equal(a, b))


if __name__ == "__main__":
    unittest.main()
