"""Runs the generation benchmark of scripts/bench/generate: each engine in its own
process, on the same prompts and number of new tokens, and prints a Markdown table of
tokens/s and peak RSS with the ratios seqit is judged by.

Tokens/s count generated tokens over prompt processing plus generation (model load
excluded), as each engine reports it. Peak RSS is the child's `ru_maxrss` from wait4().
With --repeat R, each configuration runs R times, interleaved. Other processes only ever
slow a run down, so ratios use each configuration's best run (the median is shown too).
With --quiet-wait S, each run first waits (up to S seconds) until no other process is
runnable, and the background activity seen is recorded with the results.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = 3.0  # seqit batch 8 must reach 3x llama.cpp batch 1


def run(argv, env=None):
    """Runs argv to completion; returns (rc, stdout, stderr, peak RSS in MiB, wall s)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss / 1024, wall


def background_activity(seconds=1.0):
    """Mean number of runnable tasks other than this one, sampled from /proc/loadavg."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        samples.append(max(running - 1, 0))
        time.sleep(0.05)
    return sum(samples) / len(samples)


def wait_until_quiet(limit):
    """Waits up to `limit` seconds for an idle machine; returns the activity last seen."""
    deadline = time.monotonic() + limit
    while True:
        activity = background_activity()
        if activity < 0.2 or time.monotonic() >= deadline:
            return activity
        time.sleep(2)


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in output")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqit", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--hf", required=True, help="Hugging Face directory converted from the GGUF")
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=0.0,
                    help="before each run, wait up to this many seconds for an idle machine")
    ap.add_argument("--out", required=True, help="directory for outputs and results.json")
    args = ap.parse_args()

    here = Path(__file__).resolve().parent
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = [json.loads(line) for line in open(args.prompts) if line.strip()]
    n = len(prompts)
    py = sys.executable

    configs = [("llama.cpp", 1, [py, str(here / "generate_llamacpp.py"), "--model", args.gguf,
                                "--prompts", args.prompts, "--tokens", str(args.tokens), "--threads", str(args.threads)])]
    if not args.skip_torch:
        for b in (1, n):
            configs.append(("PyTorch f32", b, [py, str(here / "generate_torch.py"), "--model", args.hf,
                                               "--prompts", args.prompts, "--tokens", str(args.tokens),
                                               "--threads", str(args.threads), "--batch-size", str(b)]))
    for b in (1, n):
        configs.append(("seqit", b, None))

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    results = {(name, b): [] for name, b, _ in configs}
    outputs = {}
    activity = []
    for rep in range(args.repeat):
        for name, b, argv in configs:
            activity.append(wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else background_activity())
            if name == "seqit":
                o = out_dir / f"seqit_b{b}.jsonl"
                for stale in (o, Path(str(o) + ".partial")):
                    stale.unlink(missing_ok=True)
                argv = [args.seqit, "generate", "--model", args.gguf, "--weights", "fast", "--input", args.prompts,
                        "--output", str(o), "--max-tokens", str(args.tokens), "--ignore-eos",
                        "--batch-size", str(b), "--stats"]
            rc, stdout, stderr, rss, wall = run(argv, env)
            if rc != 0:
                print(f"{name} batch {b} failed (exit {rc}):\n{stderr[-3000:]}", file=sys.stderr)
                return 1
            if name == "seqit":
                stats = last_json(stderr)
                tok_s = stats["generated_tokens_per_second"]
                tokens = stats["generated_tokens"]
                recs = {json.loads(l)["id"]: json.loads(l) for l in open(o)}
                texts = [recs[p["id"]]["output"] for p in prompts]
            else:
                res = last_json(stdout)
                tok_s = res["tokens"] / res["seconds"]
                tokens = res["tokens"]
                texts = res["outputs"]
            outputs[(name, b)] = texts
            results[(name, b)].append({"tok_s": tok_s, "tokens": tokens, "rss_mib": rss, "wall_s": wall,
                                       "background": activity[-1]})
            print(f"  run {rep + 1}/{args.repeat}: {name:12s} batch {b}: {tok_s:8.1f} tok/s, peak RSS {rss:7.0f} MiB"
                  f" (other runnable tasks before: {activity[-1]:.2f})", file=sys.stderr, flush=True)

    med = {k: statistics.median(r["tok_s"] for r in v) for k, v in results.items()}
    best = {k: max(r["tok_s"] for r in v) for k, v in results.items()}
    rss = {k: max(r["rss_mib"] for r in v) for k, v in results.items()}
    lines = [
        f"{n} prompts (chat template), {args.tokens} new tokens each (greedy, EOS ignored), "
        f"{args.threads} threads, {args.repeat} runs each",
        "",
        "| engine | batch | tokens | tokens/s (best) | median | runs | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, b, _ in configs:
        runs = ", ".join(f"{r['tok_s']:.0f}" for r in results[(name, b)])
        tokens = results[(name, b)][0]["tokens"]
        lines.append(f"| {name} | {b} | {tokens} | {best[(name, b)]:.1f} | {med[(name, b)]:.1f} | {runs} "
                     f"| {rss[(name, b)]:.0f} |")
    lines.append("")
    ratios = {}
    s1, s8, l1 = best[("seqit", 1)], best[("seqit", n)], best[("llama.cpp", 1)]
    ratios[f"seqit b{n} / llama.cpp b1"] = s8 / l1
    ratios["seqit b1 / llama.cpp b1"] = s1 / l1
    if not args.skip_torch:
        ratios[f"seqit b{n} / PyTorch b{n}"] = s8 / best[("PyTorch f32", n)]
        ratios["seqit b1 / PyTorch b1"] = s1 / best[("PyTorch f32", 1)]
    lines += ["| ratio (best runs) | value |", "|---|---:|"]
    for k, v in ratios.items():
        lines.append(f"| {k} | {v:.2f} |")
    floor_ok = ratios[f"seqit b{n} / llama.cpp b1"] >= FLOOR
    lines.append("")
    lines.append(f"Floor (seqit b{n} >= {FLOOR:.1f} x llama.cpp b1): {'PASS' if floor_ok else 'FAIL'}")
    same = sum(a == b for a, b in zip(outputs[("seqit", 1)], outputs[("seqit", n)]))
    lines.append(f"seqit batch-{n} outputs equal to batch-1 outputs: {same}/{n}")
    lines.append(f"Other runnable tasks just before each run: mean {statistics.mean(activity):.2f}, "
                 f"max {max(activity):.2f} (0 = idle machine; more skews the numbers)")
    table = "\n".join(lines)
    print(table)
    (out_dir / "results.md").write_text(table + "\n")
    (out_dir / "results.json").write_text(json.dumps({
        "tokens": args.tokens, "threads": args.threads, "repeat": args.repeat,
        "runs": {f"{k[0]} b{k[1]}": v for k, v in results.items()},
        "median_tokens_per_second": {f"{k[0]} b{k[1]}": v for k, v in med.items()},
        "best_tokens_per_second": {f"{k[0]} b{k[1]}": v for k, v in best.items()},
        "peak_rss_mib": {f"{k[0]} b{k[1]}": v for k, v in rss.items()},
        "ratios": ratios, "floor_pass": floor_ok, "background_activity": activity,
        "outputs": {f"{k[0]} b{k[1]}": v for k, v in outputs.items()},
    }, indent=1))
    return 0 if floor_ok else 2


if __name__ == "__main__":
    sys.exit(main())
