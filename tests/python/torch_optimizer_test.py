"""Tests of normuon.torch.NorMuon on CPU against the independent pure-PyTorch reference in
reference_normuon.py (docs/ARCHITECTURE.md section 1; fp32 Newton-Schulz; AdamW for biases).

Tolerances (docs/ARCHITECTURE.md section 6):
  * "Loss-curve parity": a free-running training run is chaotic after ~100 steps (measured
    below: a 1-ulp change of one weight moves the reference's own loss by tens of percent by
    step 200), so free-running curves are compared over the first 60 steps only, and the full
    200 steps are teacher-forced: both implementations get the same parameters and gradients
    every step.
  * Each teacher-forced update (W after - W before) is measured against a float64 run of
    the same update: ||ours - truth|| <= 1e-5 ||truth|| + 2.4e-7 ||W_after|| (ARCHITECTURE.md's
    tolerance).

Run by Bazel (//tests/python:torch_optimizer_test) with Debian's /usr/bin/python3 and
$NORMUON_LIBRARY pointing at the built libnormuon.so.
"""

import copy
import io
import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference_normuon import Reference  # noqa: E402

import normuon  # noqa: E402
from normuon.torch import NorMuon  # noqa: E402

torch.set_num_threads(1)

UPDATE_RTOL = 1e-5
UPDATE_FLOOR = 2.4e-7
LOSS_RTOL_60 = 1e-4


def make_mlp(seed=0):
    """16 -> 64 -> 64 -> 4 with tanh: a tall (64x16), a square and a wide (4x64) matrix, and
    three biases."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, 4))


def make_data(seed=1, n=256):
    """A regression task from a random teacher network plus noise (fixed seed)."""
    torch.manual_seed(seed)
    x = torch.randn(n, 16)
    teacher = make_mlp(seed + 100)
    with torch.no_grad():
        y = teacher(x) + 0.05 * torch.randn(n, 4)
    return x, y


def batch(data, step, size=64):
    x, y = data
    i = (step * size) % x.shape[0]
    return x[i:i + size], y[i:i + size]


def mse(model, x, y):
    return ((model(x) - y) ** 2).mean()


def groups_of(model, lr=0.02, weight_decay=0.01, adamw_lr=3e-3, adamw_wd=0.0):
    """The official recipe's groups: matrices NorMuon, the rest AdamW."""
    mats = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [dict(params=mats, use_muon=True, lr=lr, momentum=0.95, beta2=0.95,
                 weight_decay=weight_decay),
            dict(params=rest, use_muon=False, lr=adamw_lr, betas=(0.9, 0.95), eps=1e-10,
                 weight_decay=adamw_wd)]


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def norm64(t):
    return torch.linalg.norm(t.detach().double()).item()


class TeacherForced:
    """Runs ours, the fp32 reference and the float64 reference side by side from the same
    parameters and gradients each step (teacher forcing). Each of our updates is measured
    against the float64 update ("truth") with docs/ARCHITECTURE.md section 6's bound:

        ||ours - truth|| <= 1e-5 ||truth|| + 2.4e-7 ||W_after||

    The fp32 reference's own error is reported beside ours in the failure message.
    `worst_design` records max ||ours - truth|| / bound per parameter."""

    def __init__(self, test, model, opt_kwargs=None, ref_kwargs=None, group_fn=groups_of):
        self.test = test
        self.ours_model = model
        self.ref_model = copy.deepcopy(model)
        self.truth_model = copy.deepcopy(model).double()
        self.opt = NorMuon(group_fn(self.ours_model), **(opt_kwargs or {}))
        self.ref = Reference(group_fn(self.ref_model), **(ref_kwargs or {}))
        self.truth = Reference(group_fn(self.truth_model), dtype=torch.float64,
                               **(ref_kwargs or {}))
        self.worst = 0.0
        self.worst_design = {}
        self.ours_loss, self.ref_loss = [], []

    def sync_ref_groups(self):
        for og, rg, tg in zip(self.opt.param_groups, self.ref.groups, self.truth.groups):
            for k in ("lr", "weight_decay"):
                rg[k] = tg[k] = og[k]

    def step(self, x, y, eval_xy=None, drop_grads=()):
        for po, pr, pt in zip(self.ours_model.parameters(), self.ref_model.parameters(),
                              self.truth_model.parameters()):
            with torch.no_grad():
                pr.copy_(po)
                pt.copy_(po)
        self.opt.zero_grad(set_to_none=True)
        mse(self.ours_model, x, y).backward()
        named = dict(self.ours_model.named_parameters())
        for name in drop_grads:
            named[name].grad = None
        ours = list(self.ours_model.parameters())
        refs = list(self.ref_model.parameters())
        truths = list(self.truth_model.parameters())
        ref_grads = {pr: (None if po.grad is None else po.grad.clone())
                     for po, pr in zip(ours, refs)}
        truth_grads = {pt: (None if po.grad is None else po.grad.double())
                       for po, pt in zip(ours, truths)}
        before = snapshot(self.ours_model)
        self.sync_ref_groups()
        self.opt.step()
        self.ref.step(ref_grads)
        self.truth.step(truth_grads)
        for name, po, pr, pt, w in zip(named, ours, refs, truths, before):
            w = w.double()
            truth = pt.detach() - w
            err = norm64(po.detach().double() - w - truth)
            err_ref = norm64(pr.detach().double() - w - truth)
            tol = UPDATE_RTOL * norm64(truth) + UPDATE_FLOOR * norm64(pt)
            bound = tol
            self.worst = max(self.worst, err / bound)
            self.worst_design[name] = max(self.worst_design.get(name, 0.0), err / tol)
            self.test.assertLessEqual(
                err, bound, f"{name}: update error {err:.3e} > {bound:.3e} (tolerance "
                            f"{tol:.3e}, fp32 reference's own error {err_ref:.3e})")
        if eval_xy is not None:
            with torch.no_grad():
                self.ours_loss.append(mse(self.ours_model, *eval_xy).item())
                self.ref_loss.append(mse(self.ref_model, *eval_xy).item())

    def summary(self):
        design = ", ".join(f"{k} {v:.2f}" for k, v in self.worst_design.items())
        return (f"worst error / bound {self.worst:.2f}; worst error / tolerance per "
                f"parameter: {design}")


def max_rel(a, b):
    return max(abs(u - v) / abs(v) for u, v in zip(a, b))


class LossCurveTest(unittest.TestCase):
    def test_free_running_loss_curve_matches_the_reference_for_60_steps(self):
        data = make_data()
        ours_model = make_mlp()
        ref_model = copy.deepcopy(ours_model)
        opt = NorMuon(groups_of(ours_model))
        ref = Reference(groups_of(ref_model))
        ours_loss, ref_loss = [], []
        for step in range(60):
            x, y = batch(data, step)
            loss = mse(ours_model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ours_loss.append(loss.item())
            for p in ref_model.parameters():
                p.grad = None
            loss = mse(ref_model, x, y)
            loss.backward()
            ref.step({p: p.grad for p in ref_model.parameters()})
            ref_loss.append(loss.item())
        rel = max_rel(ours_loss, ref_loss)
        print(f"\n  free-running, 60 steps: loss {ours_loss[0]:.6f} -> {ours_loss[-1]:.6f}, "
              f"max relative difference to the reference {rel:.2e}", file=sys.stderr)
        self.assertLess(ours_loss[-1], 0.1 * ours_loss[0])  # it trains
        self.assertLessEqual(rel, LOSS_RTOL_60)

    def test_teacher_forced_200_steps_every_update_and_the_loss_curve_match(self):
        data = make_data()
        tf = TeacherForced(self, make_mlp())
        for step in range(200):
            tf.step(*batch(data, step), eval_xy=data)
        rel = max_rel(tf.ours_loss, tf.ref_loss)
        final = abs(tf.ours_loss[-1] - tf.ref_loss[-1]) / tf.ref_loss[-1]
        print(f"\n  teacher-forced, 200 steps: {tf.summary()}; "
              f"loss {tf.ours_loss[0]:.6f} -> {tf.ours_loss[-1]:.6f}; max relative loss "
              f"difference {rel:.2e}, final {final:.2e}", file=sys.stderr)
        self.assertLess(tf.ours_loss[-1], 0.1 * tf.ours_loss[0])
        self.assertLessEqual(rel, LOSS_RTOL_60)
        self.assertLessEqual(final, 1e-3)

    def test_variants_nesterov_and_a_conv_kernel_match_the_reference(self):
        data = make_data()
        for variant in ("normuon", "normuon_paper", "muon"):
            for nesterov in (True, False):
                with self.subTest(variant=variant, nesterov=nesterov):
                    tf = TeacherForced(self, make_mlp(),
                                       dict(variant=variant, nesterov=nesterov, ns_steps=5),
                                       dict(variant=variant, nesterov=nesterov, ns_steps=5))
                    for step in range(4):
                        tf.step(*batch(data, step))

    def test_conv_kernels_are_flattened_to_out_by_in_times_kernel(self):
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Tanh(),
                                    torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 4))
        x, y = torch.randn(16, 3, 6, 6), torch.randn(16, 4)
        tf = TeacherForced(self, model)
        for _ in range(4):
            tf.step(x, y)
        state = tf.opt.state_dict()["state"]
        self.assertEqual(tuple(state[0]["momentum_buffer"].shape), (8, 3, 3, 3))
        self.assertEqual(tuple(state[0]["second_momentum_buffer"].shape), (8, 1))


class ScheduleAndGroupTest(unittest.TestCase):
    def test_a_scheduler_changes_the_lr_the_runtime_uses(self):
        data = make_data()
        tf = TeacherForced(self, make_mlp())
        sched = torch.optim.lr_scheduler.LambdaLR(tf.opt, lambda s: 0.5 ** s)
        seen = []
        for step in range(5):
            seen.append([g["lr"] for g in tf.opt.param_groups])
            tf.step(*batch(data, step))  # the reference gets the scheduled lr of each group
            sched.step()
        self.assertAlmostEqual(seen[4][0], 0.02 * 0.5 ** 4)
        self.assertAlmostEqual(seen[4][1], 3e-3 * 0.5 ** 4)

    def test_lr_zero_from_a_scheduler_freezes_every_parameter(self):
        data = make_data()
        model = make_mlp()
        opt = NorMuon(groups_of(model))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < 2 else 0.0)
        for step in range(4):
            before = snapshot(model)
            opt.zero_grad()
            mse(model, *batch(data, step)).backward()
            opt.step()
            sched.step()
            changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
            if step < 2:
                self.assertTrue(all(changed), step)
            else:
                self.assertFalse(any(changed), step)

    def test_weight_decay_edits_reach_the_runtime(self):
        data = make_data()
        tf = TeacherForced(self, make_mlp())
        for step in range(3):
            tf.opt.param_groups[0]["weight_decay"] = 0.1 * step
            tf.opt.param_groups[1]["weight_decay"] = 0.05 * step
            tf.step(*batch(data, step))

    def test_missing_gradients_mean_zero_gradient_and_no_weight_decay(self):
        data = make_data()
        tf = TeacherForced(self, make_mlp(), group_fn=lambda m: groups_of(m, adamw_wd=0.1))
        tf.step(*batch(data, 0))
        tf.step(*batch(data, 1), drop_grads=("2.weight", "2.bias"))
        tf.step(*batch(data, 2), drop_grads=("0.weight", "0.bias", "2.weight", "2.bias",
                                            "4.weight", "4.bias"))

    def test_buffers_that_move_between_steps_are_rebound(self):
        data = make_data()
        tf = TeacherForced(self, make_mlp())
        tf.step(*batch(data, 0))
        for p in tf.ours_model.parameters():
            p.data = p.data.clone()  # new memory, same values
        tf.step(*batch(data, 1))

    def test_plain_parameters_split_by_dims_with_names_and_defaults(self):
        model = make_mlp()
        opt = NorMuon(model.named_parameters())
        g0, g1 = opt.param_groups
        self.assertTrue(g0["use_muon"])
        self.assertEqual([p.dim() for p in g0["params"]], [2, 2, 2])
        self.assertEqual((g0["lr"], g0["momentum"], g0["beta2"], g0["weight_decay"]),
                         (0.02, 0.95, 0.95, 0.0))
        self.assertFalse(g1["use_muon"])
        self.assertEqual((g1["lr"], g1["betas"], g1["eps"], g1["weight_decay"]),
                         (3e-4, (0.9, 0.95), 1e-10, 0.0))
        opt2 = NorMuon(model.parameters(), lr=0.01, adamw_lr=1e-3)
        self.assertEqual((opt2.param_groups[0]["lr"], opt2.param_groups[1]["lr"]), (0.01, 1e-3))
        inferred = NorMuon([{"params": [model[0].weight]}, {"params": [model[0].bias]}])
        self.assertEqual([g["use_muon"] for g in inferred.param_groups], [True, False])

    def test_closure_and_zero_grad(self):
        data = make_data()
        a = make_mlp()
        b = copy.deepcopy(a)
        oa, ob = NorMuon(groups_of(a)), NorMuon(groups_of(b))
        x, y = batch(data, 0)

        def closure():
            oa.zero_grad()
            loss = mse(a, x, y)
            loss.backward()
            return loss
        loss = oa.step(closure)
        ob.zero_grad()
        expected = mse(b, x, y)
        expected.backward()
        ob.step()
        self.assertEqual(loss.item(), expected.item())
        for pa, pb in zip(a.parameters(), b.parameters()):
            self.assertTrue(torch.equal(pa, pb))
        oa.zero_grad(set_to_none=True)
        self.assertTrue(all(p.grad is None for p in a.parameters()))

    def test_bf16_parameters_round_the_fp32_update_once(self):
        data = make_data()
        model = make_mlp().to(torch.bfloat16)
        ref_model = copy.deepcopy(model).float()
        opt = NorMuon(groups_of(model))
        ref = Reference(groups_of(ref_model))
        x, y = batch(data, 0)
        mse(model, x.bfloat16(), y.bfloat16()).backward()
        grads = {pr: po.grad.float() for po, pr in zip(model.parameters(),
                                                        ref_model.parameters())}
        opt.step()
        ref.step(grads)
        for po, pr in zip(model.parameters(), ref_model.parameters()):
            self.assertEqual(po.dtype, torch.bfloat16)
            diff = (po.float() - pr).abs()
            # one bf16 rounding of the fp32 result: half an ulp (2^-8 relative), plus slack for
            # fp32 differences right at a rounding boundary
            bound = pr.abs() * 2.0 ** -7 + 1e-30
            self.assertTrue(bool((diff <= bound).all()), float((diff / bound).max()))

    def test_profile_trace_and_memory_queries(self):
        import json
        model = make_mlp()
        opt = NorMuon(model.named_parameters())
        with self.assertRaisesRegex(RuntimeError, "no step has run yet"):
            opt.last_step_profile()
        mse(model, *batch(make_data(), 0)).backward()
        opt.step()
        self.assertGreater(opt.last_step_profile()["total_ms"], 0.0)
        events = json.loads("[" + opt.last_step_trace() + "]")
        self.assertTrue(events and all("name" in e for e in events))
        # momentum + v of 3 matrices and Adam moments of 3 biases, at least
        state_floats = sum(p.numel() for p in model.parameters()) * 2
        self.assertGreaterEqual(opt.memory_required(), state_floats * 4)

    def test_check_finite_skips_the_step_and_names_the_parameter(self):
        data = make_data()
        model = make_mlp()
        opt = NorMuon(model.named_parameters(), check_finite=True)
        mse(model, *batch(data, 0)).backward()
        opt.step()
        before = snapshot(model)
        state_before = opt.state_dict()
        opt.zero_grad()
        mse(model, *batch(data, 1)).backward()
        model[2].weight.grad[3, 5] = float("nan")
        opt.step()  # skipped, not raised
        result = opt.step_result()
        self.assertEqual((result.steps_taken, result.steps_skipped, result.last_skipped),
                         (1, 1, True))
        self.assertEqual(result.nonfinite_param, "2.weight")
        for a, b in zip(before, model.parameters()):
            self.assertTrue(torch.equal(a, b))
        assert_state_equal(self, state_before, opt.state_dict())


def assert_state_equal(test, a, b):
    test.assertEqual(a["param_groups"], b["param_groups"])
    test.assertEqual(set(a["state"]), set(b["state"]))
    for i in a["state"]:
        test.assertEqual(set(a["state"][i]), set(b["state"][i]))
        for k in a["state"][i]:
            test.assertTrue(torch.equal(a["state"][i][k], b["state"][i][k]), f"{i} {k}")


class StateDictTest(unittest.TestCase):
    def train(self, model, opt, data, steps, start=0):
        for step in range(start, start + steps):
            opt.zero_grad(set_to_none=True)
            mse(model, *batch(data, step)).backward()
            opt.step()

    def test_round_trip_after_5_steps_continues_bitwise_identically(self):
        data = make_data()
        model = make_mlp()
        opt = NorMuon(groups_of(model))
        self.train(model, opt, data, 5)
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
        self.train(model, opt, data, 10, start=5)  # uninterrupted

        buf.seek(0)
        saved = torch.load(buf)
        resumed = make_mlp(seed=42)  # other values: everything must come from the checkpoint
        resumed.load_state_dict(saved["model"])
        opt2 = NorMuon(groups_of(resumed, lr=0.5, weight_decay=0.5))  # groups come from the file
        opt2.load_state_dict(saved["opt"])  # before the first step
        self.assertEqual(opt2.param_groups[0]["lr"], 0.02)
        assert_state_equal(self, saved["opt"], opt2.state_dict())
        self.train(resumed, opt2, data, 10, start=5)
        for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
            self.assertTrue(torch.equal(a, b), name)
        assert_state_equal(self, opt.state_dict(), opt2.state_dict())

    def test_state_has_the_standard_layout_and_the_reference_values(self):
        data = make_data()
        tf = TeacherForced(self, make_mlp())
        for step in range(3):
            tf.step(*batch(data, step))
        sd = tf.opt.state_dict()
        self.assertEqual(sorted(sd), ["param_groups", "state"])
        self.assertEqual([g["params"] for g in sd["param_groups"]], [[0, 1, 2], [3, 4, 5]])
        ref_params = [p for g in tf.ref.groups for p in g["params"]]
        for i, p in enumerate(ref_params):
            st, ref = sd["state"][i], tf.ref.state[p]
            if i < 3:
                self.assertEqual(sorted(st), ["momentum_buffer", "second_momentum_buffer"])
                torch.testing.assert_close(st["momentum_buffer"], ref["M"], rtol=1e-5, atol=1e-8)
                torch.testing.assert_close(st["second_momentum_buffer"], ref["v"][:, None],
                                           rtol=1e-4, atol=1e-10)
            else:
                self.assertEqual(sorted(st), ["exp_avg", "exp_avg_sq", "step"])
                torch.testing.assert_close(st["exp_avg"], ref["m"], rtol=1e-5, atol=1e-9)
                torch.testing.assert_close(st["exp_avg_sq"], ref["v"], rtol=1e-5, atol=1e-12)
                self.assertEqual(int(st["step"]), 3)
                self.assertEqual(st["step"].dtype, torch.int64)

    def test_pickling_the_optimizer_points_to_state_dict(self):
        opt = NorMuon(make_mlp().parameters())
        with self.assertRaisesRegex(TypeError, "state_dict"):
            copy.deepcopy(opt)

    def test_load_into_a_stepped_optimizer_and_muon_state(self):
        data = make_data()
        model = make_mlp()
        opt = NorMuon(groups_of(model), variant="muon")
        self.train(model, opt, data, 3)
        sd = opt.state_dict()
        self.assertEqual(sorted(sd["state"][0]), ["momentum_buffer"])
        self.train(model, opt, data, 2, start=3)
        opt.load_state_dict(sd)
        assert_state_equal(self, sd, opt.state_dict())

    def test_mismatched_state_dicts_are_refused_without_changes(self):
        data = make_data()
        model = make_mlp()
        opt = NorMuon(groups_of(model))
        self.train(model, opt, data, 2)
        good = opt.state_dict()
        other = NorMuon(groups_of(make_mlp()), variant="muon")
        bad_keys = copy.deepcopy(good)
        del bad_keys["state"][0]["second_momentum_buffer"]
        bad_shape = copy.deepcopy(good)
        bad_shape["state"][1]["momentum_buffer"] = torch.zeros(3, 3)
        bad_groups = copy.deepcopy(good)
        bad_groups["param_groups"].pop()
        bad_kind = copy.deepcopy(good)
        bad_kind["param_groups"][0]["use_muon"] = False
        for bad in (bad_keys, bad_shape, bad_groups, bad_kind):
            with self.assertRaises(ValueError):
                opt.load_state_dict(bad)
            assert_state_equal(self, good, opt.state_dict())
        with self.assertRaises(ValueError):
            other.load_state_dict(good)  # normuon state into a muon optimizer


class MisuseTest(unittest.TestCase):
    """Each misuse raises a clear exception before anything changes: parameters, optimizer
    state and step counts are bitwise the same afterwards, and the corrected call works."""

    def setUp(self):
        self.data = make_data()
        self.model = make_mlp()
        self.opt = NorMuon(self.model.named_parameters())

    def backward(self, step=0):
        self.opt.zero_grad(set_to_none=True)
        mse(self.model, *batch(self.data, step)).backward()

    def assert_refused(self, misuse, exc, pattern, stepped=True):
        """Optionally steps once, computes gradients, applies `misuse()`, then checks that
        step() raises exc matching pattern and changed nothing."""
        if stepped:
            self.backward(0)
            self.opt.step()
        self.backward(1)
        misuse()
        before = snapshot(self.model)
        state = self.opt.state_dict()
        result = self.opt.step_result()
        with self.assertRaisesRegex(exc, pattern):
            self.opt.step()
        for a, b in zip(before, self.model.parameters()):
            self.assertTrue(torch.equal(a, b))
        self.assertEqual(result, self.opt.step_result())
        assert_state_equal(self, state, self.opt.state_dict())

    def test_a_1d_tensor_in_a_matrix_group(self):
        with self.assertRaisesRegex(ValueError, r"'param.1'.*1-D.*use_muon=True"):
            NorMuon([{"params": [self.model[0].weight, self.model[0].bias], "use_muon": True}])
        with self.assertRaisesRegex(ValueError, r"'0.bias'.*1-D.*use_muon=True"):
            NorMuon([{"params": list(self.model.named_parameters())[:2], "use_muon": True}])
        with self.assertRaisesRegex(ValueError, "mixes matrices"):
            NorMuon([{"params": [self.model[0].weight, self.model[0].bias]}])

    def test_unsupported_dtypes(self):
        for dtype in (torch.float16, torch.float64, torch.complex64, torch.int32):
            with self.subTest(dtype=dtype):
                p = torch.zeros(4, 4, dtype=dtype)
                with self.assertRaisesRegex(TypeError, "only torch.float32 and torch.bfloat16"):
                    NorMuon([p])
        with self.assertRaisesRegex(TypeError, "must be tensors"):
            NorMuon([{"params": [3.0]}])

    def test_unknown_group_keys(self):
        with self.assertRaisesRegex(ValueError, r"unknown keys \['betas'\]"):
            NorMuon([{"params": [self.model[0].weight], "use_muon": True, "betas": (0.9, 0.9)}])

    def test_bad_hyper_parameters_and_switches(self):
        with self.assertRaisesRegex(ValueError, "momentum=1.0 must be in"):
            NorMuon(self.model.parameters(), momentum=1.0)
        with self.assertRaisesRegex(ValueError, "lr=-1 must be >= 0"):
            NorMuon(self.model.parameters(), lr=-1)
        with self.assertRaisesRegex(ValueError, "variant='adam'"):
            NorMuon(self.model.parameters(), variant="adam")

    def test_a_non_contiguous_parameter(self):
        for stepped in (False, True):
            with self.subTest(stepped=stepped):
                self.setUp()
                w = self.model[2].weight

                def misuse():
                    nc = torch.empty(w.shape[1], w.shape[0]).t()
                    nc.copy_(w.data)
                    w.data = nc
                self.assert_refused(misuse, ValueError, "'2.weight'.*is not contiguous",
                                    stepped=stepped)
                w.data = w.data.contiguous()
                self.opt.step()  # corrected: works
                self.assertEqual(self.opt.step_result().steps_taken, 2 if stepped else 1)

    def test_a_non_contiguous_gradient(self):
        w = self.model[4].weight

        def misuse():
            g = torch.empty(w.shape[1], w.shape[0]).t()
            g.copy_(w.grad)
            w.grad = g
        self.assert_refused(misuse, ValueError, "'4.weight'.*gradient is not contiguous")

    def test_a_tensor_on_another_device(self):
        stray = torch.nn.Parameter(torch.zeros(4, 4, device="meta"))
        self.opt = NorMuon(list(self.model.parameters()) + [stray])
        self.assert_refused(lambda: None, ValueError,
                            r"'param.3' \(group 0\) is on meta but the other parameters "
                            r"are on cpu",
                            stepped=False)

    def test_a_shape_change_after_the_first_step(self):
        w = self.model[2].weight

        def misuse():
            w.data = torch.zeros(32, 128)
            w.grad = None
        self.assert_refused(misuse, ValueError,
                            r"'2.weight'.*changed after the first step: now shape \[32, 128\]")

    def test_a_dtype_change_after_the_first_step(self):
        b = self.model[0].bias

        def misuse():
            b.data = b.data.bfloat16()
            b.grad = None
        self.assert_refused(misuse, ValueError, "'0.bias'.*changed after the first step")

    def test_a_momentum_change_after_the_first_step(self):
        def misuse():
            self.opt.param_groups[0]["momentum"] = 0.9
        self.assert_refused(misuse, ValueError, "momentum/beta2/betas/eps changed")

    def test_add_param_group_after_the_first_step(self):
        self.backward(0)
        self.opt.step()
        with self.assertRaisesRegex(RuntimeError, "after the first step"):
            self.opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3, 3))]})

    def test_c_api_error_text_reaches_the_python_exception(self):
        def misuse():
            self.opt.param_groups[0]["lr"] = float("nan")
        self.assert_refused(misuse, normuon.NorMuonError,
                            r"normuon_set_group_lr \(group 0\): NORMUON_ERROR_INVALID_ARGUMENT: "
                            r"lr = nan must be finite and >= 0")
        with self.assertRaises(normuon.InvalidArgumentError) as cm:
            self.opt.step()
        e = cm.exception
        self.assertIsInstance(e, ValueError)
        self.assertEqual(e.status, normuon.Status.ERROR_INVALID_ARGUMENT)
        self.assertEqual(e.message, "lr = nan must be finite and >= 0")
        self.opt.param_groups[0]["lr"] = 0.02
        self.opt.step()  # corrected: works

    def test_c_api_error_text_from_the_first_step(self):
        self.opt.param_groups[1]["betas"] = (0.9, float("nan"))
        self.backward(0)
        before = snapshot(self.model)
        with self.assertRaisesRegex(normuon.InvalidArgumentError,
                                    r"normuon_add_group \(group 1\).*beta2 = nan"):
            self.opt.step()
        for a, b in zip(before, self.model.parameters()):
            self.assertTrue(torch.equal(a, b))
        self.assertEqual(self.opt.step_result().steps_taken, 0)
        self.opt.param_groups[1]["betas"] = (0.9, 0.95)
        self.opt.step()  # the failed first step left no half-built runtime behind
        self.assertEqual(self.opt.step_result().steps_taken, 1)


class GramNewtonSchulzTest(unittest.TestCase):
    """ns_method="gram" (README, "Gram Newton-Schulz"): the same map as the standard iteration,
    so training follows the standard run closely; bad settings are refused naming the field."""

    def train(self, steps=60, **kwargs):
        data = make_data()
        model = make_mlp()
        opt = NorMuon(groups_of(model), **kwargs)
        losses = []
        for step in range(steps):
            loss = mse(model, *batch(data, step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return model, opt, losses

    def test_gram_trains_like_standard_and_reports_no_fallback(self):
        std_model, _, std_loss = self.train()
        gram_model, opt, gram_loss = self.train(ns_method="gram")
        rel = max_rel(gram_loss, std_loss)
        print(f"\n  gram vs standard, 60 steps: final loss {gram_loss[-1]:.6f} vs "
              f"{std_loss[-1]:.6f}, max relative difference {rel:.2e}", file=sys.stderr)
        self.assertLess(gram_loss[-1], 0.1 * gram_loss[0])
        self.assertLessEqual(rel, 1e-2)
        # Another iteration really ran: the bits differ.
        self.assertFalse(all(torch.equal(a, b) for a, b in
                             zip(gram_model.parameters(), std_model.parameters())))
        self.assertEqual(opt.step_result().ns_fallbacks, 0)
        _, _, explicit = self.train(steps=3, ns_method="gram", ns_restarts=[1, 3])
        self.assertEqual(len(explicit), 3)

    def test_symmetric_products_change_nothing_on_cpu(self):
        # config.ns_symmetric_products selects the CUDA tile products; the CPU backend always
        # uses its own triangle products, so the flag must leave its bits alone.
        plain, _, _ = self.train(steps=4, ns_method="gram")
        tiled, _, _ = self.train(steps=4, ns_method="gram", ns_symmetric_products=True)
        for a, b in zip(plain.parameters(), tiled.parameters()):
            self.assertTrue(torch.equal(a, b))

    def test_bad_settings_are_refused_naming_the_field(self):
        with self.assertRaisesRegex(ValueError, "ns_method='newton'"):
            NorMuon(groups_of(make_mlp()), ns_method="newton")
        with self.assertRaisesRegex(TypeError, "ns_restarts"):
            NorMuon(groups_of(make_mlp()), ns_method="gram", ns_restarts="2")
        with self.assertRaisesRegex(TypeError, "ns_symmetric_products"):
            NorMuon(groups_of(make_mlp()), ns_method="gram", ns_symmetric_products=1)
        with self.assertRaisesRegex(normuon.InvalidArgumentError, r"config\.ns_restarts\[0\] = 5"):
            self.train(steps=1, ns_method="gram", ns_restarts=[5])
        with self.assertRaisesRegex(normuon.InvalidArgumentError, "NORMUON_NS_FP16"):
            self.train(steps=1, ns_dtype="fp16")


if __name__ == "__main__":
    unittest.main()
