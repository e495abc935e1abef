#!/usr/bin/python3
"""Trains one small model twice on the same data and budget: with torch.optim.AdamW and with
normuon.torch.NorMuon (NorMuon for the matrices, the runtime's AdamW for biases), and prints
both loss curves side by side; with matplotlib installed it also saves them as a PNG.

A comparison to look at, not a benchmark or an assertion: one seed, one small task, learning
rates picked once (AdamW 3e-3; NorMuon 0.02 for matrices, 3e-3 for biases), no tuning.

    bazel build //:libnormuon.so
    /usr/bin/python3 examples/torch_adamw_vs_normuon.py [--steps 300] [--plot curves.png]

The task: classify 32-dimensional inputs into 10 classes labelled by a random "teacher" MLP
(a fixed seed; 16384 training and 1024 held-out points), with a 32 -> 128 -> 128 -> 10 MLP.
"""

import argparse
import copy
import importlib.util
import os
import sys
import time

import torch

if importlib.util.find_spec("normuon") is None:  # run from the repository: use ../python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from normuon.torch import NorMuon  # noqa: E402


def make_task(seed=0, n_train=16384, n_test=1024, dim=32, classes=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, dim, generator=g)
    teacher = torch.nn.Sequential(torch.nn.Linear(dim, 64), torch.nn.Tanh(),
                                  torch.nn.Linear(64, classes))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        y = teacher(x).argmax(dim=1)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def make_model(seed=1, dim=32, hidden=128, classes=10):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, classes))


def train(model, opt, train_set, test_set, steps, batch=128, every=10):
    """Minibatch SGD loop; returns [(step, train loss, test loss, test accuracy)] and seconds
    spent in opt.step()."""
    x, y = train_set
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(2)  # the same batches for every optimizer
    curve, opt_seconds = [], 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t0 = time.perf_counter()
        opt.step()
        opt_seconds += time.perf_counter() - t0
        if step % every == 0 or step == 1:
            with torch.no_grad():
                logits = model(test_set[0])
                test_loss = loss_fn(logits, test_set[1]).item()
                acc = (logits.argmax(1) == test_set[1]).float().mean().item()
            curve.append((step, loss.item(), test_loss, acc))
    return curve, opt_seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=20, help="print every N steps")
    ap.add_argument("--plot", default="adamw_vs_normuon.png",
                    help="PNG path (written only when matplotlib is importable)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    train_set, test_set = make_task()
    base = make_model()
    runs = {}

    m = copy.deepcopy(base)
    runs["AdamW"] = train(m, torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.9, 0.95),
                                               weight_decay=0.01),
                          train_set, test_set, args.steps, every=args.every)

    m = copy.deepcopy(base)
    opt = NorMuon(m.named_parameters(), lr=0.02, weight_decay=0.01, adamw_lr=3e-3)
    runs["NorMuon"] = train(m, opt, train_set, test_set, args.steps, every=args.every)

    names = list(runs)
    print("step  " + "  ".join(f"{n + ' train':>14} {n + ' test':>13} {'acc':>6}"
                              for n in names))
    for rows in zip(*(runs[n][0] for n in names)):
        step = rows[0][0]
        print(f"{step:4d}  " + "  ".join(f"{tr:14.4f} {te:13.4f} {acc:6.3f}"
                                        for _, tr, te, acc in rows))
    for n in names:
        curve, secs = runs[n]
        print(f"{n}: final test loss {curve[-1][2]:.4f}, accuracy {curve[-1][3]:.3f}, "
              f"{1e3 * secs / args.steps:.3f} ms per optimizer step")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for n in names:
        curve = runs[n][0]
        ax.plot([c[0] for c in curve], [c[1] for c in curve], label=f"{n} train")
        ax.plot([c[0] for c in curve], [c[2] for c in curve], "--", label=f"{n} test")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Same model, data and budget: torch AdamW vs normuon NorMuon")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
