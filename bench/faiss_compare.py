#!/usr/bin/env python3
"""Compare omm-index's PdqIndex with FAISS IndexBinaryMultiHash on the same data and queries.

FAISS is configured like Open Media Match / python-threatexchange's PDQMultiHashIndex:
IndexBinaryMultiHash(d=256, nhash=16, b=16), nflip = radius // 16, range_search(q, radius + 1)
(FAISS binary range search keeps distances strictly below the radius). Single thread.

Usage (from the workspace root):

    pip install faiss-cpu numpy
    python3 bench/faiss_compare.py --n 1000000 --data random

By default the script first runs the Rust side
(`cargo run --release -p omm-index --example scale`), which generates the data set and the
queries into --dir and records its own timings there; then it loads the very same files into
FAISS, times each query, checks that FAISS returns the same number of hits per query, and prints
a markdown table with both medians and the ratio. Results also go to
<dir>/faiss-<data>-<n>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import faiss


def pct(values, p):
    s = sorted(values)
    return s[round((len(s) - 1) * p)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--data", default="random", choices=["random", "clustered"])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--faiss-queries", type=int, default=500,
                    help="how many of the queries FAISS answers (it is slow at 10M)")
    ap.add_argument("--radius", type=int, default=31)
    ap.add_argument("--dir", default="/tmp/omm-index-bench")
    ap.add_argument("--skip-rust", action="store_true", help="reuse the files of an earlier run")
    ap.add_argument("--rust-args", default="", help="extra arguments for the scale example")
    args = ap.parse_args()

    tag = f"{args.data}-{args.n}"
    if not args.skip_rust:
        cmd = ["cargo", "run", "--release", "-q", "-p", "omm-index", "--example", "scale", "--",
               "--n", str(args.n), "--data", args.data, "--queries", str(args.queries),
               "--radius", str(args.radius), "--dir", args.dir] + args.rust_args.split()
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)

    data = np.fromfile(os.path.join(args.dir, f"data-{tag}.bin"), dtype=np.uint8).reshape(-1, 32)
    queries = np.fromfile(os.path.join(args.dir, f"queries-{tag}.bin"), dtype=np.uint8).reshape(-1, 32)
    with open(os.path.join(args.dir, f"hits-{tag}.txt")) as f:
        rust_hits = [int(line) for line in f]
    with open(os.path.join(args.dir, f"rust-{tag}.json")) as f:
        rust = json.load(f)
    assert len(data) == args.n, (len(data), args.n)

    faiss.omp_set_num_threads(1)
    index = faiss.IndexBinaryMultiHash(256, 16, 16)
    t0 = time.perf_counter()
    index.add(data)
    add_s = time.perf_counter() - t0
    index.nflip = args.radius // 16

    nq = min(args.faiss_queries, len(queries))
    lat = []
    mismatches = 0
    for i in range(nq):
        q = queries[i:i + 1]
        t0 = time.perf_counter()
        lims, dist, ids = index.range_search(q, args.radius + 1)
        lat.append((time.perf_counter() - t0) * 1e6)
        if int(lims[1] - lims[0]) != rust_hits[i]:
            mismatches += 1

    faiss_median = statistics.median(lat)
    rust_median = rust["median_us"]
    result = {
        "n": args.n,
        "data": args.data,
        "radius": args.radius,
        "faiss_queries": nq,
        "faiss_add_s": add_s,
        "faiss_median_us": faiss_median,
        "faiss_p99_us": pct(lat, 0.99),
        "rust_median_us": rust_median,
        "rust_p99_us": rust["p99_us"],
        "hit_count_mismatches": mismatches,
        "faiss_over_rust": faiss_median / rust_median,
    }
    with open(os.path.join(args.dir, f"faiss-{tag}.json"), "w") as f:
        json.dump(result, f, indent=1)
    print()
    print("| data | N | radius | FAISS median µs | FAISS p99 µs | omm median µs | omm p99 µs | FAISS/omm | hit-count mismatches |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.data} | {args.n} | {args.radius} | {faiss_median:.0f} | {result['faiss_p99_us']:.0f} | "
          f"{rust_median:.1f} | {rust['p99_us']:.1f} | {result['faiss_over_rust']:.0f}× | {mismatches}/{nq} |")
    print(f"FAISS add: {add_s:.1f} s for {args.n}")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
