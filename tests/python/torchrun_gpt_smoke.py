"""Smoke test of examples/torchrun_gpt.py: two ranks started as torchrun starts them (its
environment variables; CPU, gloo) for a few steps without the baselines, and the one-process
sweep for a few steps. Asserts that both finish and print their summaries; the numbers are not
checked (a demo, not a test)."""

import os
import socket
import subprocess
import sys
import tempfile

example = os.path.abspath(sys.argv[1])
env = dict(os.environ, OMP_NUM_THREADS="1")
def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


with tempfile.TemporaryDirectory() as d:
    # The environment torchrun gives its workers (RANK, WORLD_SIZE, MASTER_ADDR/PORT, ...),
    # set here: torchrun's elastic agent itself is not what this tests, and under load its
    # rendezvous store has dropped connections ("Broken pipe") on this VM.
    port, world = free_port(), 2
    procs = []
    for rank in range(world):
        renv = dict(env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                    LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        cmd = [sys.executable, example, "--steps=4", "--eval_every=2", "--eval_batches=2",
               "--batch=4", "--no_baselines", f"--plot={d}/gpt.png", f"--json={d}/gpt.json"]
        procs.append(subprocess.Popen(cmd, env=renv, stdout=open(f"{d}/rank{rank}.log", "w"),
                                      stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out = open(f"{d}/rank0.log").read()
    print(out[-3000:])
    assert codes == [0] * world, f"exit codes {codes}: {open(f'{d}/rank1.log').read()[-3000:]}"
    assert "held-out loss at the end" in out and "normuon_sharded" in out
    assert os.path.exists(f"{d}/gpt.json")
    cmd = [sys.executable, example, "--sweep", "--steps=3", "--eval_every=3", "--eval_batches=1",
           "--batch=2", "--adamw_lrs", "0.004", "--normuon_lrs", "0.02",
           f"--sweep_json={d}/sweep.json"]
    run = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=300)
    print(run.stdout[-2000:])
    assert run.returncode == 0, f"the sweep exited {run.returncode}"
    assert "best: AdamW lr" in run.stdout
print("ok")
