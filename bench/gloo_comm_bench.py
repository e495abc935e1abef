"""What the torch.distributed (gloo) communicator of normuon.torch costs per optimizer step.

    /usr/bin/python3 bench/gloo_comm_bench.py [--world 2] [--steps 30] [--rows 256 --cols 256
        --matrices 4]

One run, one JSON object on stdout:
  * single: NorMuon.step() in one process, unsharded, no communicator (median ms);
  * sharded: the same parameters row-sharded over `world` processes joined by gloo (file://
    rendezvous), NorMuon(shards=...) through normuon._dist_comm: the median step of each rank,
    the time spent inside the communicator's Python callbacks per step, split into the time
    waiting for gloo (the transfer, and the peers: a rank that owns more Newton-Schulz work
    arrives later) and the rest (adapter_wall: Python, signatures, staging copies, issuing the
    gloo calls, and any preemption on a busy machine), with the CPU time of the calling thread
    inside the callbacks (adapter_cpu, time.thread_time: what the adapter itself burns,
    waits included, preemption not), the collectives per step, and a bare torch.distributed
    all_gather of 8 floats on a gloo group (gloo's own latency floor).
Only opt.step() is timed (gradients are fixed tensors set once; no forward/backward).
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from normuon.torch import NorMuon  # noqa: E402


def make(args, world=1, rank=0):
    g = torch.Generator().manual_seed(0)
    full = {f"w{i}": torch.randn(args.rows, args.cols, generator=g) * 0.05
            for i in range(args.matrices)}
    full.update({f"b{i}": torch.randn(args.rows, generator=g) * 0.05
                 for i in range(args.matrices)})
    grads = {n: torch.randn(t.shape, generator=g) for n, t in full.items()}
    params, shards = {}, {}
    for n, t in full.items():
        chunk = -(-t.shape[0] // world)
        begin = min(rank * chunk, t.shape[0])
        count = max(0, min(chunk, t.shape[0] - begin))
        params[n] = torch.nn.Parameter(t[begin:begin + count].clone())
        params[n].grad = grads[n][begin:begin + count].clone()
        shards[params[n]] = (tuple(t.shape), begin)
    groups = [{"params": [(n, p) for n, p in params.items() if n[0] == "w"], "use_muon": True},
              {"params": [(n, p) for n, p in params.items() if n[0] == "b"],
               "use_muon": False}]
    return params, groups, (shards if world > 1 else None)


def timed_steps(opt, steps, warmup):
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.step()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def worker(args):
    import torch.distributed as dist
    from normuon import _dist_comm
    dist.init_process_group("gloo", init_method=f"file://{args.store}", rank=args.rank,
                            world_size=args.world, timeout=datetime.timedelta(seconds=120))
    spent = {"s": 0.0, "n": 0, "wait": 0.0, "cpu": 0.0}
    original = _dist_comm._GlooComm.run
    original_wait = _dist_comm._GlooComm._wait

    def wait(self, *a):
        t0 = time.perf_counter()
        try:
            return original_wait(self, *a)
        finally:
            spent["wait"] += time.perf_counter() - t0
    _dist_comm._GlooComm._wait = wait

    def run(self, *a):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return original(self, *a)
        finally:
            spent["s"] += time.perf_counter() - t0
            spent["cpu"] += time.thread_time() - c0
            spent["n"] += 1
    _dist_comm._GlooComm.run = run
    params, groups, shards = make(args, args.world, args.rank)
    opt = NorMuon(groups, shards=shards, comm_timeout=120)
    opt.step()  # builds the runtime (registration collectives): not timed
    spent.update(s=0.0, n=0, wait=0.0, cpu=0.0)
    times = timed_steps(opt, args.steps, args.warmup)
    timed_calls = args.steps + args.warmup
    # gloo's floor: a bare all_gather of 8 floats on a fresh gloo group.
    group = dist.new_group(backend="gloo")
    x, outs = torch.zeros(8), [torch.empty(8) for _ in range(args.world)]
    for _ in range(20):
        dist.all_gather(outs, x, group=group)
    t0, n = time.perf_counter(), 200
    for _ in range(n):
        dist.all_gather(outs, x, group=group)
    bare_ms = (time.perf_counter() - t0) / n * 1e3
    out = {"rank": args.rank, "step_ms_median": statistics.median(times),
           "callback_ms_per_step": spent["s"] / timed_calls * 1e3,
           "collectives_per_step": spent["n"] / timed_calls,
           "callback_ms_per_collective": spent["s"] / max(1, spent["n"]) * 1e3,
           "waiting_ms_per_step": spent["wait"] / timed_calls * 1e3,
           "adapter_wall_ms_per_step": (spent["s"] - spent["wait"]) / timed_calls * 1e3,
           "adapter_cpu_ms_per_step": spent["cpu"] / timed_calls * 1e3,
           "adapter_cpu_ms_per_collective": spent["cpu"] / max(1, spent["n"]) * 1e3,
           "bare_gloo_all_gather_ms": bare_ms}
    with open(os.path.join(args.out, f"rank{args.rank}.json"), "w") as f:
        json.dump(out, f)
    del opt
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=256)
    ap.add_argument("--matrices", type=int, default=4)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--store")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        worker(args)
        return
    params, groups, _ = make(args)
    opt = NorMuon(groups)
    opt.step()
    single = timed_steps(opt, args.steps, args.warmup)
    del opt
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs = [subprocess.Popen(
            [sys.executable, "-B", os.path.abspath(__file__), "--worker", f"--rank={r}",
             f"--world={args.world}", f"--store={d}/store", f"--out={d}",
             f"--steps={args.steps}", f"--warmup={args.warmup}", f"--rows={args.rows}",
             f"--cols={args.cols}", f"--matrices={args.matrices}"], env=env)
            for r in range(args.world)]
        try:
            for p in procs:
                if p.wait(timeout=600) != 0:
                    raise SystemExit(f"a rank failed (exit {p.returncode})")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        ranks = [json.load(open(os.path.join(d, f"rank{r}.json"))) for r in range(args.world)]
    sharded_ms = max(r["step_ms_median"] for r in ranks)
    cb = statistics.mean(r["callback_ms_per_step"] for r in ranks)
    per = statistics.mean(r["callback_ms_per_collective"] for r in ranks)
    bare = statistics.mean(r["bare_gloo_all_gather_ms"] for r in ranks)
    print(json.dumps({
        "model": f"{args.matrices} matrices {args.rows}x{args.cols} (NorMuon) + "
                 f"{args.matrices} vectors of {args.rows} (AdamW), fp32, CPU, 1 thread/rank",
        "world": args.world, "steps": args.steps,
        "single_process_step_ms": statistics.median(single),
        "sharded_gloo_step_ms": sharded_ms,
        "callback_ms_per_step": cb,
        "collectives_per_step": statistics.mean(r["collectives_per_step"] for r in ranks),
        "callback_ms_per_collective": per,
        "bare_gloo_all_gather_ms": bare,
        "waiting_ms_per_step": statistics.mean(r["waiting_ms_per_step"] for r in ranks),
        "adapter_wall_ms_per_step": statistics.mean(r["adapter_wall_ms_per_step"]
                                                    for r in ranks),
        "adapter_cpu_ms_per_step": statistics.mean(r["adapter_cpu_ms_per_step"]
                                                   for r in ranks),
        "adapter_cpu_ms_per_collective": statistics.mean(r["adapter_cpu_ms_per_collective"]
                                                         for r in ranks),
        "ranks": ranks}, indent=1))


if __name__ == "__main__":
    main()
