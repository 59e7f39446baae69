#!/usr/bin/env python3
"""Driver of scripts/bench/train: the same training steps in seqit and in PyTorch.

Each run is its own process, so that its peak RSS (GNU time's %M) is its own. PyTorch's run is train_torch.py; seqit's is `seqit train` with `--max-steps`,
whose metrics.jsonl gives tokens/s per step.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SEQ = 512
BATCH = 4
SETTINGS = {
    "lora": {"lr": 2e-4, "rank": 16, "alpha": 32, "dropout": 0.05},
    "full": {"lr": 2e-5},
}
WORDS = (
    "the model reads each instruction and answers it step by step with care while "
    "keeping every fact consistent across the sequence of tasks it was given before"
).split()


def make_data(path: str, n: int) -> None:
    """Conversations whose answers are far longer than 512 tokens (rows are full)."""
    records = []
    for i in range(n):
        answer = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(700))
        records.append({"instruction": f"Task {i}: write a long answer.", "output": answer})
    with open(path, "w") as f:
        json.dump(records, f)


def run_child(cmd: list) -> tuple:
    """Runs `cmd` under GNU time; returns (stdout, peak RSS of that process in MiB)."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stderr[-4000:]}")
    return out.stdout, int(out.stderr.strip().splitlines()[-1]) / 1024.0


def seqit_run(args, mode: str, data: str) -> dict:
    out_dir = os.path.join(args.work, f"seqit-{mode}")
    s = SETTINGS[mode]
    cmd = [
        args.seqit, "train", "--model", args.model, "--data", data, "--output", out_dir,
        "--template", "chatml", "--max-len", str(SEQ), "--batch-size", str(BATCH),
        "--epochs", "1", "--max-steps", str(args.steps + 1), "--lr", str(s["lr"]),
        "--warmup-ratio", "0", "--seed", "1", "--dtype", args.dtype,
    ]
    if mode == "full":
        cmd.append("--full")
    else:
        cmd += ["--lora-rank", str(s["rank"]), "--lora-alpha", str(s["alpha"]),
                "--lora-dropout", str(s["dropout"])]
    started = time.time()
    _, rss_mib = run_child(cmd)
    steps = [json.loads(l) for l in open(os.path.join(out_dir, "metrics.jsonl"))]
    timed = steps[1:]
    return {
        "tokens_per_second": statistics.median(m["tokens_per_second"] for m in timed),
        "peak_rss_mib": rss_mib,
        "losses": [m["loss"] for m in steps],
        "tokens_per_step": steps[0]["tokens"],
        "wall_s": time.time() - started,
    }


def torch_run(args, mode: str, data: str) -> dict:
    s = SETTINGS[mode]
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [
        sys.executable, os.path.join(here, "train_torch.py"), "--model", args.model,
        "--data", data, "--mode", mode, "--steps", str(args.steps), "--seq", str(SEQ),
        "--batch", str(BATCH), "--lr", str(s["lr"]), "--dtype", args.dtype,
    ]
    if mode == "lora":
        cmd += ["--rank", str(s["rank"]), "--alpha", str(s["alpha"]), "--dropout", str(s["dropout"])]
    stdout, rss_mib = run_child(cmd)
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = rss_mib
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seqit", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--modes", default="lora full")
    p.add_argument("--json", required=True)
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    args = p.parse_args()
    data = os.path.join(args.work, "data.json")
    make_data(data, BATCH * (args.steps + 1))
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, batch {BATCH} x {SEQ}, "
          f"{args.dtype}, {args.steps} timed steps")
    results = {}
    failed = False
    for mode in args.modes.split():
        seqit = seqit_run(args, mode, data)
        ref = torch_run(args, mode, data)
        ratio = seqit["tokens_per_second"] / ref["tokens_per_second"]
        mem = seqit["peak_rss_mib"] / ref["peak_rss_mib"]
        results[mode] = {"seqit": seqit, "pytorch": ref, "speed_ratio": ratio, "memory_ratio": mem}
        print(f"{mode}: seqit {seqit['tokens_per_second']:.0f} tok/s, {seqit['peak_rss_mib']:.0f} MiB; "
              f"PyTorch {ref['tokens_per_second']:.0f} tok/s, {ref['peak_rss_mib']:.0f} MiB; "
              f"speed {ratio:.2f}x, memory {mem:.2f}x", flush=True)
        print(f"  first losses: seqit {seqit['losses'][:3]}, PyTorch {ref['losses'][:3]}", flush=True)
        if mode == "lora" and args.dtype == "f32" and (ratio < 1.0 or mem > 1.0):
            failed = True
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print()
    print("| mode | seqit tokens/s | PyTorch tokens/s | ratio | seqit peak RSS | PyTorch peak RSS | ratio |")
    print("|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['seqit']['tokens_per_second']:.0f} | {r['pytorch']['tokens_per_second']:.0f} | "
              f"{r['speed_ratio']:.2f}x | {r['seqit']['peak_rss_mib']:.0f} MiB | "
              f"{r['pytorch']['peak_rss_mib']:.0f} MiB | {r['memory_ratio']:.2f}x |")
    if failed:
        sys.exit("LoRA floor missed: needs >= 1.0x PyTorch's tokens/s and <= its peak RSS")


if __name__ == "__main__":
    main()
