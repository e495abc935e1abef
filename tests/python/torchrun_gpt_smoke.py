"""Smoke test of examples/torchrun_gpt.py: two ranks under torchrun (--standalone, CPU, gloo)
for a few steps without the baselines, and the one-process sweep for a few steps. Asserts that
both finish and print their summaries; the numbers are not checked (a demo, not a test)."""

import os
import subprocess
import sys
import tempfile

example = os.path.abspath(sys.argv[1])
env = dict(os.environ, OMP_NUM_THREADS="1")
with tempfile.TemporaryDirectory() as d:
    # --redirects/--tee 1: Debian's PyTorch 1.13 on Python 3.11 cannot parse their default "0".
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--redirects", "1", "--tee", "1", "--log_dir", os.path.join(d, "logs"), example,
           "--steps=4", "--eval_every=2", "--eval_batches=2", "--batch=4", "--no_baselines",
           f"--plot={d}/gpt.png", f"--json={d}/gpt.json"]
    run = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=300)
    print(run.stdout[-3000:])
    assert run.returncode == 0, f"torchrun exited {run.returncode}"
    assert "held-out loss at the end" in run.stdout and "normuon_sharded" in run.stdout
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
