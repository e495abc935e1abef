#!/usr/bin/env python3
"""Plots normuon_plan's TP x DP mesh comparison: predicted Newton-Schulz-phase time against the
world size, one line per strategy, one panel per input file.

Planner predictions, not measurements. Input: the JSON of
    normuon_plan --model=M --tp=T --world=W0 --mesh_worlds=W1,W2,... --json
(one file per Newton-Schulz method). Usage:
    python3 bench/plot_mesh_sweep.py OUT.png SWEEP.json [SWEEP.json ...]
Needs matplotlib (Debian: python3-matplotlib, run with /usr/bin/python3).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {
    "gather_to_owner": "a. gather to owner (ours)",
    "duplicated_tp": "b. NS duplicated on every TP rank",
    "gram_allreduce_tp": "c. Gram all-reduce per iteration",
    "split_gram": "d. Gram NS split over k ranks",
}


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    out, inputs = argv[1], argv[2:]
    fig, axes = plt.subplots(1, len(inputs), figsize=(6.5 * len(inputs), 4.8), squeeze=False)
    for ax, path in zip(axes[0], inputs):
        with open(path) as f:
            doc = json.load(f)
        mesh = sorted(doc["mesh"], key=lambda m: m["world"])
        worlds = [m["world"] for m in mesh]
        tp = mesh[0]["tp"]
        for name, label in LABELS.items():
            steps, ks = [], []
            for m in mesh:
                s = next(x for x in m["strategies"] if x["strategy"] == name)
                steps.append(s["step_ms"])
                ks.append(s["split_k"])
            ax.plot(worlds, steps, marker="o", label=label)
            if name == "split_gram":
                for w, t, k in zip(worlds, steps, ks):
                    ax.annotate(f"k={k}", (w, t), textcoords="offset points", xytext=(4, -12),
                                fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(worlds)
        ax.set_xticklabels([str(w) for w in worlds])
        ax.set_xlabel(f"GPUs (TP {tp} x DP)")
        ax.set_ylabel("predicted NS phase, ms (gather + NS + scatter)")
        ax.set_title(f"{doc['model']}: a-c {doc['ns_cost']}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("normuon_plan predictions, not measurements", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv)
