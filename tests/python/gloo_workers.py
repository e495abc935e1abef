"""Runs a test script's worker mode as `world` processes (one per gloo rank) and collects how
they ended: shared by the multi-process PyTorch tests."""

import os
import subprocess
import sys


def run_workers(script, world, args, out, timeout=240):
    """Starts `python3 -B script --worker --rank=r --world=world --store=out/store --out=out
    *args` for every rank r, waits for all (killing what is left after `timeout` seconds), and
    returns ([exit status per rank], [the last 4000 characters of each rank's log])."""
    store = os.path.join(out, "store")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for r in range(world):
        cmd = [sys.executable, "-B", os.path.abspath(script), "--worker", f"--rank={r}",
               f"--world={world}", f"--store={store}", f"--out={out}"] + list(args)
        with open(os.path.join(out, f"rank{r}.log"), "w") as log:
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    logs = []
    for r in range(world):
        with open(os.path.join(out, f"rank{r}.log")) as f:
            logs.append(f.read()[-4000:])
    return [p.returncode for p in procs], logs
