#!/usr/bin/env python3
"""Where a second thread loses, from `optc bench --trace` files (Chrome trace JSON).

    optc bench MODEL --threads 2 --trace two.json
    optc bench MODEL --threads 1 --trace one.json
    python3 benches/trace_threads.py two.json [--one one.json] [--top 30]

A trace holds the first profiled runs: each kernel (node) on the calling thread (tid 0) and
every parallel task on the thread that ran it. Runs are told apart by the first kernel's name;
runs in which no worker ran a task (the thread choice looking at one thread) are left out of
the two-thread trace, runs with workers out of the one-thread trace.

Per node, averaged over the runs kept: wall time, the tasks' busy time per thread, and idle,
the thread time the node wasted (threads x wall - busy: a worker waiting for the node's last
task, or for a serial node). With --one: busy at one thread against busy at two, the work the
second thread adds (reads of the other core's writes, shared-cache traffic), sorted by it.

Not part of CI; no dependencies beyond the standard library.
"""
from __future__ import annotations

import argparse
import collections
import json


def load(path: str, want_workers: bool) -> tuple[dict, int, int]:
    d = json.load(open(path))
    events = d["traceEvents"] if isinstance(d, dict) else d
    spans = [e for e in events if e.get("ph") == "X"]
    kernels = sorted((e for e in spans if e.get("cat") != "task" and e["tid"] == 0), key=lambda e: e["ts"])
    tasks = sorted((e for e in spans if e.get("cat") == "task"), key=lambda e: e["ts"])
    if not kernels:
        raise SystemExit(f"{path}: no kernels in the trace")
    runs: list[list[dict]] = []
    for k in kernels:
        if k["name"] == kernels[0]["name"] or not runs:
            runs.append([])
        runs[-1].append(k)
    worker_starts = sorted(t["ts"] for t in tasks if t["tid"] != 0)

    def has_worker(run: list[dict]) -> bool:
        s, e = run[0]["ts"], run[-1]["ts"] + run[-1]["dur"]
        return any(s <= t < e for t in worker_starts)

    kept = [r for r in runs if has_worker(r) == want_workers]
    per = collections.defaultdict(lambda: [0.0, 0.0, 0.0, False])  # wall, busy0, busy1, parallel
    ti = 0
    for run in kept:
        for k in run:
            s, e = k["ts"], k["ts"] + k["dur"]
            while ti < len(tasks) and tasks[ti]["ts"] < s:
                ti += 1
            j, busy = ti, [0.0, 0.0]
            while j < len(tasks) and tasks[j]["ts"] < e:
                busy[min(tasks[j]["tid"], 1)] += tasks[j]["dur"]
                j += 1
            a = per[k["name"]]
            a[0] += k["dur"]
            if j > ti:
                a[1] += busy[0]
                a[2] += busy[1]
                a[3] = True
            else:
                a[1] += k["dur"]
    n = max(len(kept), 1)
    return {name: (w / n, b0 / n, b1 / n, par) for name, (w, b0, b1, par) in per.items()}, len(runs), len(kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("two", help="trace of a run with --threads 2")
    ap.add_argument("--one", help="trace of the same model with --threads 1")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    two, nruns, nkept = load(args.two, True)
    if nkept == 0:
        raise SystemExit(f"{args.two}: no run in which a worker ran a task (traced with --threads 1?)")
    wall = sum(v[0] for v in two.values())
    busy = sum(v[1] + v[2] for v in two.values())
    print(f"{args.two}: {nruns} runs, {nkept} with a worker; per run: wall {wall:.0f} us, "
          f"busy {busy:.0f} thread-us, idle {2 * wall - busy:.0f} ({(2 * wall - busy) / (2 * wall) * 100:.0f}% of 2 x wall)")
    if args.one:
        one, n1, k1 = load(args.one, False)
        if k1 == 0:
            raise SystemExit(f"{args.one}: every run had a worker (traced with --threads 2?)")
        rows = [(two[n][1] + two[n][2] - one[n][1], one[n][1], two[n][1] + two[n][2], two[n][0], n)
                for n in one if n in two]
        b1 = sum(r[1] for r in rows)
        print(f"{args.one}: {n1} runs, {k1} on one thread; busy per run {b1:.0f} us at one thread, "
              f"{sum(r[2] for r in rows):.0f} at two ({sum(r[2] for r in rows) / max(b1, 1e-9):.2f}x)")
        print(f"{'added':>7} {'busy 1T':>8} {'busy 2T':>8} {'wall 2T':>8}  node")
        for r in sorted(rows, reverse=True)[: args.top]:
            print(f"{r[0]:7.1f} {r[1]:8.1f} {r[2]:8.1f} {r[3]:8.1f}  {r[4]}")
        return
    rows = [((2 * w - b0 - b1) if par else w, w, b0, b1, name) for name, (w, b0, b1, par) in two.items()]
    print(f"{'idle':>7} {'wall':>8} {'busy 0':>8} {'busy 1':>8}  node")
    for r in sorted(rows, reverse=True)[: args.top]:
        print(f"{r[0]:7.1f} {r[1]:8.1f} {r[2]:8.1f} {r[3]:8.1f}  {r[4]}")


if __name__ == "__main__":
    main()
