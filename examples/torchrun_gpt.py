"""A small byte-level GPT trained with normuon.torch.NorMuon sharded over torch.distributed
(gloo, CPU), beside the same model in one process and beside torch.optim.AdamW.

    torchrun --nproc_per_node=4 examples/torchrun_gpt.py   # or python3 -m torch.distributed.run
    /usr/bin/python3 examples/torchrun_gpt.py --sweep       # the learning-rate sweeps

(Debian 12's torchrun needs --redirects 1 --tee 1: see examples/README.md.)

Data: the license texts Debian ships in /usr/share/common-licenses (every regular file, sorted
by name, concatenated as bytes); the last 10% is held out. Model: a GPT-style decoder (token and
position embeddings, pre-LayerNorm blocks of causal self-attention and a 4x GELU MLP, an untied
output head) over bytes, 2 layers, d=64, context 64.

Sharded run (under torchrun): FSDP-style. Every rank holds the rows [begin, begin + count) of
every parameter (FSDP's ceil(m/P)-row chunks) and gives them to NorMuon with
`shards={param: (global_shape, row_begin)}`; the forward pass all-gathers the full tensors;
each rank runs its own slice of the global batch; the backward pass all-reduces (sums) each
full gradient, divides by the world size and keeps this rank's rows (a reduce-scatter). NorMuon
then runs sharded over a gloo communicator (normuon._dist_comm). Matrices of the blocks get
NorMuon; embeddings, the head and the LayerNorm vectors get the runtime's AdamW (as the official
recipe does).

After the sharded run, rank 0 runs the same model, data, batches and token budget in one
process twice: NorMuon unsharded and torch.optim.AdamW, and writes the three held-out loss
curves to --plot (PNG, matplotlib) and the numbers to --json. Every run uses the same learning
rate schedule: linear warmup over 5% of the steps, then linear decay to 10% at the end.

--sweep (one process, no torchrun) runs the learning-rate sweeps: AdamW over --adamw_lrs, then
NorMuon's matrix lr over --normuon_lrs with its AdamW part at AdamW's best lr; it prints the
table (held-out loss at the end of each run) and writes it to --sweep_json. The defaults of
--adamw_lr and --normuon_lr are the winners of the sweep recorded in bench/RESULTS.md.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from normuon.torch import NorMuon  # noqa: E402

DATA_DIR = "/usr/share/common-licenses"


# --- data ----------------------------------------------------------------------------------


def load_text(directory=DATA_DIR, held_out=0.1):
    names = sorted(n for n in os.listdir(directory)
                   if os.path.isfile(os.path.join(directory, n))
                   and not os.path.islink(os.path.join(directory, n)))
    if not names:
        raise SystemExit(f"no text files in {directory}")
    blob = b"\n\n".join(open(os.path.join(directory, n), "rb").read() for n in names)
    data = torch.tensor(list(blob), dtype=torch.long)
    cut = int(len(data) * (1 - held_out))
    return data[:cut], data[cut:], names


def batch(data, step, batch_size, context, seed):
    """Batch `step` of the run: the same rows for every run with the same seed."""
    g = torch.Generator().manual_seed(seed * 100003 + step)
    starts = torch.randint(0, len(data) - context - 1, (batch_size,), generator=g)
    x = torch.stack([data[s:s + context] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + context + 1] for s in starts.tolist()])
    return x, y


# --- model ---------------------------------------------------------------------------------


def shapes(args):
    """name -> (global shape, 'matrix' (NorMuon) or 'adamw')."""
    d, v = args.d_model, 256
    out = {"tok_emb": ((v, d), "adamw"), "pos_emb": ((args.context, d), "adamw")}
    for i in range(args.layers):
        out.update({
            f"h{i}.ln1.g": ((d,), "adamw"), f"h{i}.ln1.b": ((d,), "adamw"),
            f"h{i}.qkv": ((3 * d, d), "matrix"), f"h{i}.proj": ((d, d), "matrix"),
            f"h{i}.ln2.g": ((d,), "adamw"), f"h{i}.ln2.b": ((d,), "adamw"),
            f"h{i}.fc": ((4 * d, d), "matrix"), f"h{i}.out": ((d, 4 * d), "matrix"),
        })
    out.update({"lnf.g": ((d,), "adamw"), "lnf.b": ((d,), "adamw"), "head": ((v, d), "adamw")})
    return out


def init_params(args, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, (shape, _) in shapes(args).items():
        if name.endswith(".g"):
            t = torch.ones(shape)
        elif name.endswith(".b"):
            t = torch.zeros(shape)
        else:
            std = 0.02 / math.sqrt(2 * args.layers) if name.endswith((".proj", ".out")) else 0.02
            t = torch.randn(shape, generator=g) * std
        params[name] = t
    return params


def forward(p, idx, args):
    n_heads, d = args.heads, args.d_model
    b, t = idx.shape
    x = p["tok_emb"][idx] + p["pos_emb"][:t]
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(args.layers):
        h = F.layer_norm(x, (d,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"])
        q, k, v = (h @ p[f"h{i}.qkv"].t()).split(d, dim=-1)
        q, k, v = (z.view(b, t, n_heads, d // n_heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // n_heads)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + y @ p[f"h{i}.proj"].t()
        h = F.layer_norm(x, (d,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"])
        x = x + F.gelu(h @ p[f"h{i}.fc"].t()) @ p[f"h{i}.out"].t()
    x = F.layer_norm(x, (d,), p["lnf.g"], p["lnf.b"])
    return x @ p["head"].t()


def loss_fn(p, x, y, args):
    return F.cross_entropy(forward(p, x, args).reshape(-1, 256), y.reshape(-1))


@torch.no_grad()
def held_out_loss(p, val, args):
    losses = [loss_fn(p, *batch(val, i, args.batch, args.context, seed=999), args).item()
              for i in range(args.eval_batches)]
    return sum(losses) / len(losses)


def lr_factor(step, steps):
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    return 1.0 - 0.9 * (step - warm) / max(1, steps - warm)


def optimizer_groups(named, args, normuon_lr, aux_lr):
    kinds = shapes(args)
    mats = [(n, t) for n, t in named.items() if kinds[n][1] == "matrix"]
    rest = [(n, t) for n, t in named.items() if kinds[n][1] != "matrix"]
    return [{"params": mats, "use_muon": True, "lr": normuon_lr,
             "weight_decay": args.weight_decay},
            {"params": rest, "use_muon": False, "lr": aux_lr, "betas": (0.9, 0.95),
             "weight_decay": 0.0}]


# --- training --------------------------------------------------------------------------------


def train_one_process(kind, lr, args, train, val, aux_lr=None, log=None, normuon_kwargs=None):
    """One process, full tensors: kind "normuon" (matrix lr `lr`, AdamW part `aux_lr`; more
    NorMuon arguments in normuon_kwargs, e.g. ns_method) or "adamw" (torch.optim.AdamW at `lr`,
    decay on matrices only). Returns the curve, with every step's training loss in "losses"."""
    params = {n: torch.nn.Parameter(t) for n, t in init_params(args).items()}
    if kind == "normuon":
        opt = NorMuon(optimizer_groups(params, args, lr, aux_lr), **(normuon_kwargs or {}))
    else:
        kinds = shapes(args)
        opt = torch.optim.AdamW(
            [{"params": [t for n, t in params.items() if kinds[n][1] == "matrix"],
              "weight_decay": args.weight_decay},
             {"params": [t for n, t in params.items() if kinds[n][1] != "matrix"],
              "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps))
    curve = {"step": [], "held_out": [], "train": [], "losses": []}
    start = time.time()
    for step in range(args.steps):
        x, y = batch(train, step, args.batch, args.context, args.seed)
        loss = loss_fn(params, x, y, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        curve["losses"].append(loss.item())
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            curve["step"].append(step + 1)
            curve["held_out"].append(held_out_loss(params, val, args))
            curve["train"].append(loss.item())
            if log:
                log(f"{kind} lr={lr:g} step {step + 1}: train {loss.item():.4f} held-out "
                    f"{curve['held_out'][-1]:.4f} ({time.time() - start:.0f} s)")
    curve["seconds"] = time.time() - start
    return curve


def fsdp_rows(rows, world, rank):
    chunk = -(-rows // world)
    begin = min(rank * chunk, rows)
    return begin, max(0, min(chunk, rows - begin)), chunk


class GatherRows(torch.autograd.Function):
    """Forward: the full tensor, all-gathered from every rank's rows. Backward: the full
    gradient summed over ranks (all_reduce), divided by the world size; this rank's rows."""

    @staticmethod
    def forward(ctx, shard, rows, world, rank):
        import torch.distributed as dist
        _, count, chunk = fsdp_rows(rows, world, rank)
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
        dist.all_reduce(grad)
        begin, count, _ = fsdp_rows(ctx.rows, ctx.world, ctx.rank)
        return (grad[begin:begin + count] / ctx.world).contiguous(), None, None, None


def train_sharded(args, train, val, log):
    """This rank's part of the FSDP-style NorMuon run (torchrun, gloo)."""
    import torch.distributed as dist
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} is not a multiple of the world size {world}")
    full = init_params(args)
    local, shard_spec = {}, {}
    for n, t in full.items():
        begin, count, _ = fsdp_rows(t.shape[0], world, rank)
        local[n] = torch.nn.Parameter(t[begin:begin + count].clone())
        shard_spec[local[n]] = (tuple(t.shape), begin)
    opt = NorMuon(optimizer_groups(local, args, args.normuon_lr, args.adamw_lr),
                  shards=shard_spec, comm_timeout=args.comm_timeout,
                  overlap_backward=args.overlap_backward)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps))
    per_rank = args.batch // world
    curve = {"step": [], "held_out": [], "train": []}
    start = time.time()
    for step in range(args.steps):
        x, y = batch(train, step, args.batch, args.context, args.seed)
        x, y = x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]
        gathered = {n: GatherRows.apply(local[n], full[n].shape[0], world, rank) for n in local}
        loss = loss_fn(gathered, x, y, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            with torch.no_grad():
                gathered = {n: GatherRows.apply(local[n], full[n].shape[0], world, rank)
                            for n in local}
                mean_loss = loss.detach().clone()
                dist.all_reduce(mean_loss)
            curve["step"].append(step + 1)
            curve["held_out"].append(held_out_loss(gathered, val, args))
            curve["train"].append(mean_loss.item() / world)
            log(f"sharded NorMuon (world {world}) step {step + 1}: train "
                f"{curve['train'][-1]:.4f} held-out {curve['held_out'][-1]:.4f} "
                f"({time.time() - start:.0f} s)")
    curve["seconds"] = time.time() - start
    return curve


def plot(curves, path, args, world):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (Debian: python3-matplotlib): no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"normuon_sharded": ("-", f"NorMuon, sharded over {world} gloo ranks "
                                      f"(lr {args.normuon_lr:g})"),
              "normuon_single": ("--", f"NorMuon, one process (lr {args.normuon_lr:g})"),
              "adamw": ("-", f"torch.optim.AdamW (lr {args.adamw_lr:g})")}
    for key, curve in curves.items():
        style, label = styles[key]
        ax.plot(curve["step"], curve["held_out"], style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out loss (nats/byte)")
    ax.set_title(f"byte-level GPT ({args.layers} layers, d={args.d_model}, context "
                 f"{args.context}), {args.batch * args.context} tokens/step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def sweep(args, train, val):
    rows = []

    def log(msg):
        print(msg, flush=True)
    best = {}
    for lr in args.adamw_lrs:
        c = train_one_process("adamw", lr, args, train, val, log=log)
        rows.append({"optimizer": "torch.optim.AdamW", "lr": lr, "aux_lr": None,
                     "held_out": c["held_out"][-1], "seconds": c["seconds"]})
        if "adamw" not in best or c["held_out"][-1] < best["adamw"][1]:
            best["adamw"] = (lr, c["held_out"][-1])
    aux = best["adamw"][0]
    for lr in args.normuon_lrs:
        c = train_one_process("normuon", lr, args, train, val, aux_lr=aux, log=log)
        rows.append({"optimizer": "NorMuon", "lr": lr, "aux_lr": aux,
                     "held_out": c["held_out"][-1], "seconds": c["seconds"]})
        if "normuon" not in best or c["held_out"][-1] < best["normuon"][1]:
            best["normuon"] = (lr, c["held_out"][-1])
    print("\n| optimizer | lr (matrices) | lr (embeddings, head, gains) | held-out loss "
          f"after {args.steps} steps | seconds |")
    print("|---|---|---|---|---|")
    for r in rows:
        aux_s = f"{r['aux_lr']:g}" if r["aux_lr"] is not None else "same"
        print(f"| {r['optimizer']} | {r['lr']:g} | {aux_s} | {r['held_out']:.4f} | "
              f"{r['seconds']:.0f} |")
    print(f"\nbest: AdamW lr {best['adamw'][0]:g} ({best['adamw'][1]:.4f}), NorMuon lr "
          f"{best['normuon'][0]:g} ({best['normuon'][1]:.4f})")
    if args.sweep_json:
        with open(args.sweep_json, "w") as f:
            json.dump({"config": vars(args), "runs": rows, "best": best}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step, all ranks")
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--d_model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--normuon_lr", type=float, default=0.04)
    ap.add_argument("--adamw_lr", type=float, default=2e-3,
                    help="torch.optim.AdamW's lr, and NorMuon's AdamW part's")
    ap.add_argument("--weight_decay", type=float, default=0.0)
    ap.add_argument("--eval_every", type=int, default=25)
    ap.add_argument("--eval_batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--comm_timeout", type=float, default=120.0)
    ap.add_argument("--overlap_backward", action="store_true")
    ap.add_argument("--no_baselines", action="store_true",
                    help="sharded run only: skip rank 0's one-process NorMuon and AdamW runs")
    ap.add_argument("--plot", default="torchrun_gpt.png")
    ap.add_argument("--json", default="torchrun_gpt.json")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--adamw_lrs", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3, 8e-3])
    ap.add_argument("--normuon_lrs", type=float, nargs="+", default=[0.01, 0.02, 0.04, 0.08])
    ap.add_argument("--sweep_json", default="torchrun_gpt_sweep.json")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    train, val, names = load_text()
    if args.sweep:
        print(f"data: {len(train)} training bytes, {len(val)} held-out bytes from "
              f"{DATA_DIR} ({len(names)} files)")
        sweep(args, train, val)
        return
    if "RANK" not in os.environ:
        raise SystemExit("start it with torchrun (torchrun --nproc_per_node=4 "
                         "examples/torchrun_gpt.py), or pass --sweep")
    import torch.distributed as dist
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    def log(msg):
        if rank == 0:
            print(msg, flush=True)
    log(f"data: {len(train)} training bytes, {len(val)} held-out bytes from {DATA_DIR} "
        f"({len(names)} files); {world} ranks")
    curves = {"normuon_sharded": train_sharded(args, train, val, log)}
    dist.destroy_process_group()
    if rank != 0:
        return
    if not args.no_baselines:
        curves["normuon_single"] = train_one_process("normuon", args.normuon_lr, args, train,
                                                     val, aux_lr=args.adamw_lr, log=log)
        curves["adamw"] = train_one_process("adamw", args.adamw_lr, args, train, val, log=log)
    print("\nheld-out loss at the end:")
    for k, c in curves.items():
        print(f"  {k:16s} {c['held_out'][-1]:.4f}  ({c['seconds']:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "world": world, "curves": curves}, f, indent=1)
    if args.plot:
        plot(curves, args.plot, args, world)


if __name__ == "__main__":
    main()
