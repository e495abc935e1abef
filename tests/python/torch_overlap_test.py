"""Tests of NorMuon(overlap_backward=True) on CPU: gradient hooks call normuon_grad_ready during
backward, so the runtime's worker threads start each bucket before step() is called.

The runtime's results do not depend on when (or whether) grad_ready is called: bitwise on CPU.
So every training run here is compared BITWISE (torch.equal, ==) with the same run without
overlap: parameters, losses and optimizer state. The hook path tested is the one this PyTorch
has (the AccumulateGrad node's hook on Debian's 1.13; post-accumulate-grad hooks on >= 2.1).

Run by Bazel (//tests/python:torch_overlap_test) with Debian's /usr/bin/python3 and
$NORMUON_LIBRARY pointing at the built libnormuon.so.
"""

import contextlib
import gc
import json
import os
import sys
import time
import unittest
import warnings
import weakref

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from torch_optimizer_test import (  # noqa: E402
    assert_state_equal, batch, groups_of, make_data, make_mlp, mse, snapshot)

import normuon  # noqa: E402
import normuon.torch as nt  # noqa: E402
from normuon import _capi  # noqa: E402
from normuon.torch import NorMuon  # noqa: E402

torch.set_num_threads(1)

MATRICES = 3  # make_mlp: 0.weight, 2.weight, 4.weight


@contextlib.contextmanager
def grad_ready_calls():
    """Records every normuon_grad_ready call the optimizer makes: a list of (runtime param
    indices, status). The wrapper sits on the loaded library object, which normuon.torch reads
    on every call."""
    lib = _capi.lib()
    real = lib.normuon_grad_ready
    calls = []

    def wrapper(rt, params, count, stream):
        indices = [params._obj.value] if count == 1 else None
        status = real(rt, params, count, stream)
        calls.append((indices, status))
        return status
    lib.normuon_grad_ready = wrapper
    try:
        yield calls
    finally:
        lib.normuon_grad_ready = real


@contextlib.contextmanager
def step_calls():
    """Records the status of every normuon_step call (steps and discards alike)."""
    lib = _capi.lib()
    real = lib.normuon_step
    calls = []

    def wrapper(rt, lr, wd, stream):
        status = real(rt, lr, wd, stream)
        calls.append(status)
        return status
    lib.normuon_step = wrapper
    try:
        yield calls
    finally:
        lib.normuon_step = real


def train(model, opt, data, steps, micro=1, set_to_none=True, announce=True, start=0):
    """Plain training loop; with micro > 1, gradient accumulation over `micro` backward passes
    (all but the last inside opt.no_overlap() when announce). Returns the losses."""
    losses = []
    for step in range(start, start + steps):
        opt.zero_grad(set_to_none=set_to_none)
        total = 0.0
        for k in range(micro):
            x, y = batch(data, step * micro + k, size=64 // micro)
            loss = mse(model, x, y) / micro
            last = k == micro - 1
            with (opt.no_overlap() if (announce and not last and
                                       opt._switches["overlap_backward"])
                  else contextlib.nullcontext()):
                loss.backward()
            total += loss.item()
        opt.step()
        losses.append(total)
    return losses


def assert_same_params(test, a, b, what=""):
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        test.assertTrue(torch.equal(pa, pb), f"{what}{name} differs")


class BitwiseTest(unittest.TestCase):
    def run_pair(self, steps=60, micro=1, set_to_none=True, group_fn=groups_of, **kwargs):
        data = make_data()
        plain_model, over_model = make_mlp(), make_mlp()
        plain = NorMuon(group_fn(plain_model), **kwargs)
        over = NorMuon(group_fn(over_model), overlap_backward=True, **kwargs)
        plain_losses = train(plain_model, plain, data, steps, micro, set_to_none)
        with grad_ready_calls() as calls:
            over_losses = train(over_model, over, data, steps, micro, set_to_none)
        self.assertEqual(plain_losses, over_losses)
        assert_same_params(self, plain_model, over_model)
        assert_state_equal(self, plain.state_dict(), over.state_dict())
        self.assertEqual(plain.step_result(), over.step_result())
        # One call per matrix per step, all successful, except the first step (no runtime yet).
        self.assertEqual(len(calls), MATRICES * (steps - 1))
        self.assertTrue(all(status == 0 for _, status in calls))
        return plain_losses

    def test_60_steps_bitwise_equal_to_no_overlap_default_schedule(self):
        losses = self.run_pair()
        self.assertLess(losses[-1], 0.1 * losses[0])  # it trains
        print(f"\n  overlap_backward, 60 steps: loss {losses[0]:.6f} -> {losses[-1]:.6f}, "
              f"bitwise equal to the plain run", file=sys.stderr)

    def test_60_steps_bitwise_with_per_matrix_and_small_buckets(self):
        self.run_pair(schedule="per_matrix")
        self.run_pair(schedule="bucketed", bucket_bytes=20000)  # 2 buckets

    def test_sequential_schedule_only_marks_and_gives_the_same_result(self):
        self.run_pair(steps=10, schedule="sequential")

    def test_zero_grad_without_set_to_none(self):
        self.run_pair(steps=20, set_to_none=False)

    def test_gradient_accumulation_over_two_micro_batches(self):
        self.run_pair(steps=30, micro=2)
        self.run_pair(steps=10, micro=2, set_to_none=False)

    def test_weight_decay_on_every_group(self):
        self.run_pair(steps=10, group_fn=lambda m: groups_of(m, weight_decay=0.1,
                                                              adamw_wd=0.05))

    def test_accumulation_marks_only_in_the_last_backward(self):
        data = make_data()
        model = make_mlp()
        opt = NorMuon(groups_of(model), overlap_backward=True)
        train(model, opt, data, 1)  # builds the runtime
        with grad_ready_calls() as calls:
            opt.zero_grad()
            with opt.no_overlap():
                self.assertFalse(opt.overlap_backward_enabled)
                mse(model, *batch(data, 1)).backward()
            self.assertTrue(opt.overlap_backward_enabled)
            self.assertEqual(calls, [])
            opt.overlap_backward_enabled = False  # the attribute works as the context does
            mse(model, *batch(data, 2)).backward()
            self.assertEqual(calls, [])
            opt.overlap_backward_enabled = True
            mse(model, *batch(data, 3)).backward()
            # Reverse registration order: backward finishes the last layer first.
            self.assertEqual([c[0] for c in calls], [[2], [1], [0]])
            opt.step()
        self.assertEqual(opt.step_result().steps_taken, 2)

    def test_the_node_hook_path_also_on_newer_pytorch(self):
        """On PyTorch >= 2.1 the default is post-accumulate-grad hooks; the AccumulateGrad node
        path (the only one on 1.13) must keep working there too."""
        saved = nt._POST_ACCUMULATE_HOOKS
        nt._POST_ACCUMULATE_HOOKS = False
        try:
            self.run_pair(steps=8)
        finally:
            nt._POST_ACCUMULATE_HOOKS = saved

    def test_hook_mechanism_matches_the_pytorch_version(self):
        opt = NorMuon(groups_of(make_mlp()), overlap_backward=True)
        self.assertEqual(len(opt._hooks), MATRICES)
        if hasattr(torch.Tensor, "register_post_accumulate_grad_hook"):
            self.assertFalse(any(isinstance(h, tuple) for h in opt._hooks))
        else:
            self.assertTrue(all(type(h[0]).__name__ == "AccumulateGrad" for h in opt._hooks))
        print(f"\n  PyTorch {torch.__version__}: "
              f"{'post-accumulate-grad' if nt._POST_ACCUMULATE_HOOKS else 'AccumulateGrad node'}"
              f" hooks", file=sys.stderr)


class EarlyStartTest(unittest.TestCase):
    def test_the_runtime_works_before_step_is_called(self):
        """The hooks call grad_ready during backward, and the worker threads run the buckets
        then: with a pause between backward and step, every compute stage of the step is in the
        trace before step() was called, and the profile's total includes the pause."""
        data = make_data()
        model = make_mlp()
        opt = NorMuon(groups_of(model), overlap_backward=True, schedule="per_matrix")
        train(model, opt, data, 1)
        opt.zero_grad(set_to_none=True)
        with grad_ready_calls() as calls:
            mse(model, *batch(data, 1)).backward()
            self.assertEqual(len(calls), MATRICES)  # before step, from the hooks
            time.sleep(0.3)
            called_us = time.monotonic() * 1e6  # CLOCK_MONOTONIC, as the trace's steady clock
            opt.step()
        self.assertEqual(len(calls), MATRICES)
        events = json.loads("[" + opt.last_step_trace() + "]")
        compute = [e for e in events if e.get("tid") == 1 and "ts" in e]
        self.assertEqual(sorted({e["name"] for e in compute}),
                         ["momentum", "newton_schulz", "row_stats"])
        self.assertEqual(len(compute), 3 * MATRICES)
        for e in compute:
            self.assertLess(e["ts"] + e["dur"], called_us, e)
        step_thread = [e for e in events if e.get("tid") == 0 and "ts" in e]
        self.assertTrue(step_thread and all(e["ts"] >= called_us for e in step_thread))
        self.assertGreaterEqual(opt.last_step_profile()["total_ms"], 300.0)

        # Without overlap the same stages run inside step().
        plain_model = make_mlp()
        plain = NorMuon(groups_of(plain_model), schedule="per_matrix")
        train(plain_model, plain, data, 1)
        plain.zero_grad()
        mse(plain_model, *batch(data, 1)).backward()
        called_us = time.monotonic() * 1e6
        plain.step()
        events = json.loads("[" + plain.last_step_trace() + "]")
        self.assertTrue(all(e["ts"] >= called_us for e in events if "ts" in e))
        assert_same_params(self, plain_model, model)

    def test_the_first_step_has_no_overlap_and_defaults(self):
        model = make_mlp()
        opt = NorMuon(groups_of(model), overlap_backward=True)
        self.assertEqual(opt._switches["schedule"], "bucketed")
        self.assertEqual(NorMuon(groups_of(model))._switches["schedule"], "sequential")
        self.assertEqual(NorMuon(groups_of(model), overlap_backward=True,
                                 schedule="per_matrix")._switches["schedule"], "per_matrix")
        with self.assertRaisesRegex(TypeError, "overlap_backward=1"):
            NorMuon(groups_of(model), overlap_backward=1)
        with grad_ready_calls() as calls:
            mse(model, *batch(make_data(), 0)).backward()
            self.assertEqual(calls, [])  # no runtime yet
            opt.step()
        self.assertEqual(opt.step_result().steps_taken, 1)

    def test_hooks_do_not_keep_the_optimizer_alive(self):
        model = make_mlp()
        opt = NorMuon(groups_of(model), overlap_backward=True)
        data = make_data()
        train(model, opt, data, 2)
        ref = weakref.ref(opt)
        del opt
        gc.collect()
        self.assertIsNone(ref())
        mse(model, *batch(data, 0)).backward()  # the hooks of a dead optimizer do nothing


class MisuseTest(unittest.TestCase):
    """Each misuse raises at step() after discarding the begun step: parameters, optimizer
    state and step counts are bitwise unchanged, .grad is kept, and step() then works (without
    overlap) and gives what a plain optimizer gives for the same gradients."""

    def setUp(self):
        self.data = make_data()
        self.model = make_mlp()
        self.opt = NorMuon(groups_of(self.model), overlap_backward=True)
        self.plain_model = make_mlp()
        self.plain = NorMuon(groups_of(self.plain_model))
        for m, o in ((self.model, self.opt), (self.plain_model, self.plain)):
            train(m, o, self.data, 2)

    def assert_refused(self, exc, pattern):
        """step() raises exc (matching pattern) and changes nothing; a retried step() then
        matches the plain optimizer stepped on the same gradients."""
        before = snapshot(self.model)
        state = self.opt.state_dict()
        result = self.opt.step_result()
        grads = [None if p.grad is None else p.grad.clone() for p in self.model.parameters()]
        with self.assertRaisesRegex(exc, pattern):
            self.opt.step()
        for a, b in zip(before, self.model.parameters()):
            self.assertTrue(torch.equal(a, b))
        assert_state_equal(self, state, self.opt.state_dict())
        self.assertEqual(result, self.opt.step_result())
        for g, p in zip(grads, self.model.parameters()):
            self.assertTrue(torch.equal(g, p.grad))
        for pp, p in zip(self.plain_model.parameters(), self.model.parameters()):
            pp.grad = None if p.grad is None else p.grad.clone()
        self.opt.step()
        self.plain.step()
        assert_same_params(self, self.plain_model, self.model)
        assert_state_equal(self, self.plain.state_dict(), self.opt.state_dict())
        self.assertEqual(self.plain.step_result(), self.opt.step_result())
        # and the next overlapped step works again
        losses = train(self.model, self.opt, self.data, 2, start=10)
        self.assertEqual(losses, train(self.plain_model, self.plain, self.data, 2, start=10))
        assert_same_params(self, self.plain_model, self.model)

    def test_accumulation_without_no_overlap_fires_a_hook_twice(self):
        self.opt.zero_grad()
        mse(self.model, *batch(self.data, 3)).backward()
        mse(self.model, *batch(self.data, 4)).backward()
        self.assert_refused(RuntimeError, r"gradient of parameter 'param.2' \(group 0\) was "
                                          r"accumulated again.*opt.no_overlap\(\)")

    def test_gradient_clipping_after_backward(self):
        self.opt.zero_grad()
        mse(self.model, *batch(self.data, 3)).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.01)
        self.assert_refused(RuntimeError, r"gradient of parameter 'param.0' \(group 0\) was "
                                          r"changed or replaced after its hook.*clipping")

    def test_a_replaced_gradient(self):
        self.opt.zero_grad()
        mse(self.model, *batch(self.data, 3)).backward()
        w = self.model[2].weight
        w.grad = w.grad.clone()
        self.assert_refused(RuntimeError, "'param.1'.*changed or replaced")

    def test_a_non_contiguous_gradient_in_a_hook(self):
        self.opt.zero_grad(set_to_none=True)
        w = self.model[2].weight  # the second hook of backward: the step has begun by then
        w.grad = torch.zeros(w.shape[1], w.shape[0]).t()  # accumulated into, in place
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "grad and param do not obey")
            mse(self.model, *batch(self.data, 3)).backward()
        self.assertFalse(w.grad.is_contiguous())
        before = snapshot(self.model)
        with self.assertRaisesRegex(ValueError, r"'param.1'.*gradient is not contiguous"):
            self.opt.step()
        for a, b in zip(before, self.model.parameters()):
            self.assertTrue(torch.equal(a, b))
        w.grad = w.grad.contiguous()
        self.assert_refused_free_retry()

    def assert_refused_free_retry(self):
        for pp, p in zip(self.plain_model.parameters(), self.model.parameters()):
            pp.grad = p.grad.clone()
        self.opt.step()
        self.plain.step()
        assert_same_params(self, self.plain_model, self.model)
        self.assertEqual(self.plain.step_result(), self.opt.step_result())

    def test_a_c_api_error_in_a_hook_is_a_normuon_error(self):
        """The second hook's grad_ready is made to name the first hook's parameter again: the
        runtime refuses it (already marked), and step() raises that NorMuonError."""
        lib = _capi.lib()
        real = lib.normuon_grad_ready
        seen = []

        def twice_the_first(rt, params, count, stream):
            if seen:
                params._obj.value = seen[0]
            seen.append(params._obj.value)
            return real(rt, params, count, stream)
        self.opt.zero_grad()
        lib.normuon_grad_ready = twice_the_first
        try:
            mse(self.model, *batch(self.data, 3)).backward()
        finally:
            lib.normuon_grad_ready = real
        self.assertEqual(len(seen), 2)  # the error stopped the marking for this step
        self.assert_refused(normuon.InvalidArgumentError,
                            r"normuon_grad_ready \(param.1\): NORMUON_ERROR_INVALID_ARGUMENT: "
                            r".*'param.2'.*already marked ready in this step")

    def test_a_parameter_moved_between_backward_and_step(self):
        self.opt.zero_grad()
        mse(self.model, *batch(self.data, 3)).backward()
        w = self.model[0].weight
        old = w.data
        w.data = w.data.clone()
        with self.assertRaisesRegex(RuntimeError, "memory of parameter 'param.0'.*moved"):
            self.opt.step()
        self.assertTrue(torch.equal(old, w.data))
        self.assert_refused_free_retry()

    def test_zero_grad_discards_a_step_not_taken(self):
        self.opt.zero_grad()
        mse(self.model, *batch(self.data, 3)).backward()  # marks, no step
        before = snapshot(self.model)
        state = self.opt.state_dict()
        self.opt.zero_grad(set_to_none=True)
        for a, b in zip(before, self.model.parameters()):
            self.assertTrue(torch.equal(a, b))
        assert_state_equal(self, state, self.opt.state_dict())
        self.assertEqual(self.opt.step_result().steps_taken, 2)
        losses = train(self.model, self.opt, self.data, 3, start=4)
        self.assertEqual(losses, train(self.plain_model, self.plain, self.data, 3, start=4))
        assert_same_params(self, self.plain_model, self.model)
        self.assertEqual(self.plain.step_result(), self.opt.step_result())

    def test_load_state_dict_discards_a_begun_step(self):
        sd = self.plain.state_dict()
        self.opt.zero_grad()
        mse(self.model, *batch(self.data, 3)).backward()
        self.opt.load_state_dict(sd)
        assert_state_equal(self, sd, self.opt.state_dict())
        self.assert_refused_free_retry()


class MissingGradientTest(unittest.TestCase):
    """A parameter without gradient (unused in the forward pass) means "zero gradient, no weight
    decay". It gets no hook call, and step() binds it without gradient: exact with or without
    weight decay, bitwise equal to the plain run, and the step runs once (no discard, no
    warning)."""

    class WithUnused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_mlp()
            torch.manual_seed(5)
            self.unused = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.net(x)

    class SometimesUsed(torch.nn.Module):
        """A side layer that only even steps use: its gradient is there on some steps only."""

        def __init__(self):
            super().__init__()
            self.net = make_mlp()
            torch.manual_seed(6)
            self.side = torch.nn.Linear(16, 4)

        def forward(self, x, use_side):
            out = self.net(x)
            return out + self.side(x) if use_side else out

    def run_pair(self, weight_decay, steps=6):
        data = make_data()
        plain_model = self.WithUnused()
        over_model = self.WithUnused()
        groups = lambda m: groups_of(m, weight_decay=weight_decay, adamw_wd=weight_decay)  # noqa
        plain = NorMuon(groups(plain_model))
        over = NorMuon(groups(over_model), overlap_backward=True)
        with warnings.catch_warnings(record=True) as caught, \
                step_calls() as steps_run, grad_ready_calls() as marked:
            warnings.simplefilter("always")
            losses = train(over_model, over, data, steps)
        self.assertEqual(losses, train(plain_model, plain, data, steps))
        assert_same_params(self, plain_model, over_model)
        assert_state_equal(self, plain.state_dict(), over.state_dict())
        self.assertEqual(plain.step_result(), over.step_result())
        # No gradient: no update and no weight decay, so the unused layer stays as it was.
        for a, b in zip(self.WithUnused().unused.parameters(), over_model.unused.parameters()):
            self.assertTrue(torch.equal(a, b))
        # The work is done once: one normuon_step per step (a discard would add one), and
        # every matrix with a gradient marked in its hook after the first step.
        self.assertEqual(steps_run, [0] * steps)
        self.assertEqual(len(marked), MATRICES * (steps - 1))
        self.assertTrue(all(status == 0 for _, status in marked))
        self.assertEqual(over.step_result().steps_taken, steps)
        return [w for w in caught if issubclass(w.category, RuntimeWarning)]

    def test_with_weight_decay_a_missing_gradient_gets_no_weight_decay(self):
        self.assertEqual(self.run_pair(0.1), [])

    def test_without_weight_decay(self):
        self.assertEqual(self.run_pair(0.0), [])

    def test_a_gradient_present_on_some_steps_only(self):
        """The side matrix is bound to its .grad in its hook on even steps, and at step without
        gradient (set_to_none: its gradient of the step before is freed) or to its zeroed .grad
        (set_to_none=False: zero gradient with weight decay) on odd steps. Bitwise the plain
        run either way, with weight decay on every group."""
        data = make_data()
        for set_to_none in (True, False):
            models = [self.SometimesUsed(), self.SometimesUsed()]
            opts = [NorMuon(groups_of(m, weight_decay=0.1, adamw_wd=0.05),
                            overlap_backward=overlap)
                    for m, overlap in zip(models, (False, True))]
            losses = [[], []]
            with grad_ready_calls() as marked, step_calls() as steps_run:
                for step in range(8):
                    x, y = batch(data, step)
                    for k, (m, o) in enumerate(zip(models, opts)):
                        o.zero_grad(set_to_none=set_to_none)
                        loss = ((m(x, step % 2 == 0) - y) ** 2).mean()
                        loss.backward()
                        o.step()
                        losses[k].append(loss.item())
            self.assertEqual(losses[0], losses[1])
            assert_same_params(self, models[0], models[1], f"set_to_none={set_to_none}: ")
            assert_state_equal(self, opts[0].state_dict(), opts[1].state_dict())
            self.assertEqual(opts[0].step_result(), opts[1].step_result())
            self.assertEqual(len(steps_run), 16)  # 8 steps of each optimizer, no discard
            # Steps 1..7 mark the MLP's matrices; the even ones (2, 4, 6) the side matrix too.
            self.assertEqual(len(marked), MATRICES * 7 + 3)
            self.assertTrue(all(status == 0 for _, status in marked))

    def test_zero_grad_discards_a_begun_step_with_a_missing_gradient(self):
        """The discard binds the parameters without gradient (and the AdamW ones) to scratch
        memory: nothing changes, and training goes on as the plain run's."""
        data = make_data()
        models = [self.WithUnused(), self.WithUnused()]
        plain, over = [NorMuon(groups_of(m, weight_decay=0.1, adamw_wd=0.05),
                               overlap_backward=overlap)
                       for m, overlap in zip(models, (False, True))]
        train(models[0], plain, data, 2)
        train(models[1], over, data, 2)
        over.zero_grad()
        mse(models[1], *batch(data, 3)).backward()  # marks, no step
        before = snapshot(models[1])
        state = over.state_dict()
        over.zero_grad(set_to_none=True)
        for a, b in zip(before, models[1].parameters()):
            self.assertTrue(torch.equal(a, b))
        assert_state_equal(self, state, over.state_dict())
        self.assertEqual(over.step_result().steps_taken, 2)
        self.assertEqual(train(models[0], plain, data, 3, start=4),
                         train(models[1], over, data, 3, start=4))
        assert_same_params(self, models[0], models[1])
        self.assertEqual(plain.step_result(), over.step_result())


def storage_ptr(t):
    """Start of the memory t's storage owns (aliases of one storage give the same value)."""
    if hasattr(t, "untyped_storage"):
        return t.untyped_storage().data_ptr()
    return t.storage().data_ptr()


def reachable_tensors(opt):
    """Every tensor the optimizer references: through its attributes, containers, and the
    normuon.torch objects it holds (__dict__ or __slots__)."""
    found, seen, stack = [], set(), [opt]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            found.append(o)
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif isinstance(o, NorMuon) or type(o).__module__ == nt.__name__:
            stack.extend(vars(o).values() if hasattr(o, "__dict__") else ())
            for slot in getattr(type(o), "__slots__", ()):
                if hasattr(o, slot):
                    stack.append(getattr(o, slot))
    return found


class NoGradientBufferTest(unittest.TestCase):
    """The hooks bind each matrix to its own .grad: the optimizer allocates no gradient
    buffers and copies nothing, so it holds no memory besides the tensors autograd made."""

    def test_the_optimizer_holds_no_gradient_memory(self):
        data = make_data()
        model = make_mlp()
        opt = NorMuon(groups_of(model), overlap_backward=True)
        train(model, opt, data, 3)
        self.assertFalse(hasattr(opt, "_grad_buffers"))
        params = {storage_ptr(p) for p in model.parameters()}
        grads = {storage_ptr(p.grad) for p in model.parameters()}
        # Between steps (gradients still there): parameters only.
        self.assertLessEqual({storage_ptr(t) for t in reachable_tensors(opt)}, params)
        # Inside a begun step: the parameters and the gradients autograd made, nothing else.
        opt.zero_grad(set_to_none=True)
        mse(model, *batch(data, 3)).backward()
        self.assertTrue(opt._pending.begun)
        grads = {storage_ptr(p.grad) for p in model.parameters()}
        held = {storage_ptr(t) for t in reachable_tensors(opt)}
        mats = {storage_ptr(p.grad) for p in model.parameters() if p.dim() >= 2}
        self.assertLessEqual(mats, held)  # the walk does see what the pending step keeps
        self.assertLessEqual(held, params | grads)
        opt.step()
        self.assertLessEqual({storage_ptr(t) for t in reachable_tensors(opt)}, params)

    def test_the_runtime_reads_each_matrix_gradient_in_place(self):
        """Each hook binds its matrix's .grad memory (and the parameter's), before marking it;
        step binds the rest to their own memory."""
        data = make_data()
        model = make_mlp()
        opt = NorMuon(groups_of(model), overlap_backward=True)
        train(model, opt, data, 1)
        lib = _capi.lib()
        real = lib.normuon_bind
        binds = []

        def wrapper(rt, i, param, grad):
            binds.append((i, param, grad, len(marked)))
            return real(rt, i, param, grad)
        opt.zero_grad(set_to_none=True)
        lib.normuon_bind = wrapper
        try:
            with grad_ready_calls() as marked:
                mse(model, *batch(data, 1)).backward()
                self.assertEqual(len(binds), MATRICES)
                opt.step()
        finally:
            lib.normuon_bind = real
        params = list(model.parameters())
        index = [i for i, p in enumerate(params) if p.dim() >= 2] + \
            [i for i, p in enumerate(params) if p.dim() < 2]  # runtime order: groups_of's
        self.assertEqual(sorted(b[0] for b in binds), list(range(len(params))))
        for i, param, grad, marked_before in binds:
            p = params[index[i]]
            self.assertEqual(param, p.data_ptr())
            self.assertEqual(grad, p.grad.data_ptr())
        # Hooks: bind i, then mark i (the k-th bind comes before the k-th mark).
        hooks = binds[:MATRICES]
        self.assertEqual([b[3] for b in hooks], list(range(MATRICES)))
        self.assertEqual([b[0] for b in hooks], [c[0][0] for c in marked])

    def test_an_unmarked_parameter_may_move_between_backward_and_step(self):
        """Only the marked matrices are bound before step; the others (here an AdamW bias)
        are bound at step to their memory then."""
        data = make_data()
        models = [make_mlp(), make_mlp()]
        plain, over = [NorMuon(groups_of(m), overlap_backward=overlap)
                       for m, overlap in zip(models, (False, True))]
        train(models[0], plain, data, 2)
        train(models[1], over, data, 2)
        for m, o in zip(models, (plain, over)):
            o.zero_grad()
            mse(m, *batch(data, 3)).backward()
            b = m[2].bias
            b.data = b.data.clone()
            o.step()
        assert_same_params(self, models[0], models[1])
        assert_state_equal(self, plain.state_dict(), over.state_dict())
        self.assertEqual(plain.step_result(), over.step_result())


if __name__ == "__main__":
    unittest.main()
