"""Gram against standard Newton-Schulz in training (issue #14's training criterion): the byte-level
GPT of examples/torchrun_gpt.py (model, data, batches, lr schedule), trained in one process for
--steps steps from the same seed and batches, once with NorMuon(ns_method="standard") and once
with ns_method="gram". Runs diverge step by step (docs/ARCHITECTURE.md section 6), so the
criterion compares levels: the mean training loss over the last 50 steps of each run, which
must be within 2% of each other. Writes both curves (per-step training loss, smoothed, and the
held-out loss) to --plot and the numbers to --json; prints the comparison and exits 1 when the
criterion fails.

    /usr/bin/python3 bench/gram_training.py --plot bench/gram_training.png \\
        --json bench/results/gram_training.json
"""

import argparse
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load_example():
    path = os.path.join(HERE, "..", "examples", "torchrun_gpt.py")
    spec = importlib.util.spec_from_file_location("torchrun_gpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smooth(values, window=25):
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--d_model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--normuon_lr", type=float, default=0.04)
    ap.add_argument("--adamw_lr", type=float, default=2e-3)
    ap.add_argument("--weight_decay", type=float, default=0.0)
    ap.add_argument("--eval_every", type=int, default=50)
    ap.add_argument("--eval_batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--last", type=int, default=50, help="steps averaged for the criterion")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--plot", default="gram_training.png")
    ap.add_argument("--json", default="gram_training.json")
    args = ap.parse_args()
    ex = load_example()
    train, val, _ = ex.load_text()
    curves = {}
    for method in ("standard", "gram"):
        curves[method] = ex.train_one_process(
            "normuon", args.normuon_lr, args, train, val, aux_lr=args.adamw_lr,
            log=lambda m: print(m, file=sys.stderr), normuon_kwargs={"ns_method": method})
    means = {m: sum(c["losses"][-args.last:]) / args.last for m, c in curves.items()}
    rel = abs(means["gram"] - means["standard"]) / means["standard"]
    ok = rel <= args.tolerance
    result = {"steps": args.steps, "d_model": args.d_model, "layers": args.layers,
              "last": args.last, "mean_last_loss": means, "relative_difference": rel,
              "tolerance": args.tolerance, "pass": ok,
              "held_out_final": {m: c["held_out"][-1] for m, c in curves.items()},
              "seconds": {m: c["seconds"] for m, c in curves.items()},
              "curves": curves}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"mean training loss over the last {args.last} of {args.steps} steps: standard "
          f"{means['standard']:.4f}, gram {means['gram']:.4f}, relative difference {rel:.3%} "
          f"(criterion <= {args.tolerance:.0%}: {'pass' if ok else 'FAIL'}); held-out at the end: "
          f"standard {curves['standard']['held_out'][-1]:.4f}, gram "
          f"{curves['gram']['held_out'][-1]:.4f}; seconds: standard "
          f"{curves['standard']['seconds']:.0f}, gram {curves['gram']['seconds']:.0f}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (apt-get install python3-matplotlib): no plot", file=sys.stderr)
        return 0 if ok else 1
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, color in (("standard", "tab:blue"), ("gram", "tab:orange")):
        c = curves[method]
        steps = list(range(1, len(c["losses"]) + 1))
        ax.plot(steps, smooth(c["losses"]), color=color, label=f"{method}: train (25-step mean)")
        ax.plot(c["step"], c["held_out"], "o--", color=color, label=f"{method}: held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/byte)")
    ax.set_title(f"Gram vs standard Newton-Schulz: byte GPT d={args.d_model}, {args.layers} layers "
                 f"(CPU)\nlast-{args.last} mean: {means['standard']:.4f} vs {means['gram']:.4f} "
                 f"({rel:.2%})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"wrote {args.plot} and {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
