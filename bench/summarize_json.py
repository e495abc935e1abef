#!/usr/bin/env python3
"""summarize_json.py: a compact table of Google Benchmark JSON files (bench/*, --benchmark_out).

    python3 bench/summarize_json.py FILE.json [FILE.json ...] [--merge] [--markdown]

One row per benchmark name: the run with the smallest time among its repetitions (aggregates such
as _mean are skipped; with --benchmark_repetitions=N the minimum is the least-disturbed run on a
shared machine), its time and every user counter it reported. A floor (step_bench's floor_ms) is
a ceiling measured in the same run, which other load can only make slower: the row shows the
lowest floor_ms of all repetitions of all cases that differ only in their schedule (step_bench's
floor depends on the model and the rank count alone) and ratio_to_floor = step_ms / that floor. The context (date, host, CPUs,
load average, and the custom context the benchmark added: device, ceiling, ...) is printed
first. --merge pools the runs of all files (repeated invocations of the same benchmark binary)
before taking the minimum. Standard library only: it runs on the CPU and the GPU machine alike.
"""
import json
import re
import sys


def fmt(v):
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e6:
            return "%.4g" % v
        if a >= 100:
            return "%.1f" % v
        if a >= 1:
            return "%.3g" % v
        return "%.3g" % v
    return str(v)


STANDARD = {
    "name", "family_index", "per_family_instance_index", "run_name", "run_type", "repetitions",
    "repetition_index", "threads", "iterations", "real_time", "cpu_time", "time_unit", "label",
    "aggregate_name", "aggregate_unit", "error_occurred", "error_message",
}


def floor_group(name):
    """Cases that share a floor: the name without its schedule argument."""
    return re.sub(r"/schedule:\d+", "", name)


def load(path):
    with open(path) as f:
        return json.load(f)


def main(argv):
    markdown = "--markdown" in argv
    merge = "--merge" in argv
    paths = [a for a in argv if a not in ("--markdown", "--merge")]
    if not paths:
        print(__doc__.strip().splitlines()[2].strip())
        return 2
    status = 0
    docs = []
    for path in paths:
        try:
            docs.append((path, load(path)))
        except (OSError, ValueError) as e:
            print("%s: unreadable: %s" % (path, e))
            status = 1
    if merge and docs:
        for path, doc in docs:
            ctx = doc.get("context", {})
            print("%s: date=%s, load_avg=%s" % (path, ctx.get("date"), ctx.get("load_avg")))
        pooled = dict(docs[0][1])
        pooled["benchmarks"] = [b for _, d in docs for b in d.get("benchmarks", [])]
        docs = [("merged", pooled)]
    for path, doc in docs:
        ctx = doc.get("context", {})
        keys = ["date", "host_name", "num_cpus", "mhz_per_cpu", "load_avg", "library_build_type"]
        extra = [k for k in ctx if k not in keys + ["executable", "cpu_scaling_enabled", "caches",
                                                   "json_schema_version", "library_version"]]
        print("%s: %s" % (path, ", ".join("%s=%s" % (k, ctx[k]) for k in keys + extra if k in ctx)))
        best = {}
        floors = {}
        order = []
        for b in doc.get("benchmarks", []):
            if b.get("run_type") == "aggregate":
                continue
            name = b.get("run_name", b["name"])
            if b.get("error_occurred"):
                best.setdefault(name, b)
                if name not in order:
                    order.append(name)
                continue
            if "floor_ms" in b:
                group = floor_group(name)
                floors[group] = min(floors.get(group, b["floor_ms"]), b["floor_ms"])
            cur = best.get(name)
            if cur is None or cur.get("error_occurred") or b["real_time"] < cur["real_time"]:
                best[name] = b
            if name not in order:
                order.append(name)
        rows = []
        for name in order:
            b = dict(best[name])
            if floor_group(name) in floors and "step_ms" in b:
                best_floor = floors[floor_group(name)]
                if "sgemm_GFLOP/s" in b:  # the rate implied by the best floor
                    b["sgemm_GFLOP/s"] *= b["floor_ms"] / best_floor
                b["floor_ms"] = best_floor
                b["ratio_to_floor"] = b["step_ms"] / best_floor
            if b.get("error_occurred"):
                rows.append([name, "ERROR: " + b.get("error_message", "")])
                continue
            counters = ["%s=%s" % (k, fmt(v)) for k, v in b.items()
                        if k not in STANDARD and isinstance(v, (int, float))]
            row = [name, "%s %s" % (fmt(b["real_time"]), b.get("time_unit", ""))]
            row.append(" ".join(counters))
            if b.get("label"):
                row.append("(%s)" % b["label"])
            rows.append(row)
        if markdown:
            print("| benchmark | time (min of reps) | counters |")
            print("|---|---|---|")
            for r in rows:
                print("| " + " | ".join([r[0], r[1], " ".join(r[2:])]) + " |")
        else:
            for r in rows:
                print("  " + "  ".join(r))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
