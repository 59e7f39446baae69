"""Driver of scripts/bench/augment: runs the fault server, `seqit augment` and the
reference `seqit generate --endpoint`, and reports throughput against the server's
capacity and CPU overhead per item."""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client_bench import log_size, steady_state_rps  # noqa: E402


def start_server(args):
    server = subprocess.Popen(
        [args.faultserver, "--latency-ms", str(args.latency_ms),
         "--max-concurrency", str(args.concurrency), "--log", args.server_log],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    if "listening on" not in line:
        sys.exit(f"the fault server did not start: {line!r}")
    return server, line.split("listening on", 1)[1].strip()


def timed(command):
    """Runs `command`; returns (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{command[1]} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    p = argparse.ArgumentParser()
    for flag in ["--seqit", "--faultserver", "--work", "--out"]:
        p.add_argument(flag, required=True)
    p.add_argument("--items", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--latency-ms", type=int, default=100)
    args = p.parse_args()
    args.server_log = os.path.join(args.work, "server.log.jsonl")
    capacity = args.concurrency / (args.latency_ms / 1000)

    data = os.path.join(args.work, "items.jsonl")
    with open(data, "w") as f:
        for i in range(args.items):
            f.write(json.dumps({"id": f"b{i}", "instruction": f"Benchmark task {i}: describe item {i}.",
                                "input": "", "output": "x"}) + "\n")

    server, url = start_server(args)
    try:
        out = os.path.join(args.work, "augment", "sit.jsonl")
        wall, cpu = timed([args.seqit, "augment", "--input", data, "--output", out,
                           "--it-output", os.path.join(args.work, "augment", "it.jsonl"),
                           "--teacher-endpoint", url, "--teacher-model", "bench",
                           "--concurrency", str(args.concurrency), "--iterations", "2"])
        with open(out + ".stats.json") as f:
            stats = json.load(f)
        requests = sum(t["requests"] for t in stats["teachers"].values())
        steady = steady_state_rps(args.server_log, 0)
        skip = log_size(args.server_log)

        prompts = os.path.join(args.work, "prompts.jsonl")
        with open(prompts, "w") as f:
            for i in range(requests):
                f.write(json.dumps({"id": i, "prompt": f"Reference prompt {i}."}) + "\n")
        ref_wall, ref_cpu = timed([args.seqit, "generate", "--endpoint", url, "--model", "bench",
                                   "--input", prompts, "--output", os.path.join(args.work, "gen", "out.jsonl"),
                                   "--concurrency", str(args.concurrency)])
        ref_steady = steady_state_rps(args.server_log, skip)
    finally:
        server.terminate()
        server.wait()

    rate, ref_rate = requests / wall, requests / ref_wall
    result = {
        "items": args.items,
        "requests": requests,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "capacity_rps": capacity,
        "augment": {"wall_s": wall, "cpu_s": cpu, "rps": rate, "share_of_capacity": rate / capacity,
                    "steady_share_of_capacity": steady / capacity,
                    "items_per_s": args.items / wall,
                    "cpu_us_per_item": cpu / args.items * 1e6},
        "generate_reference": {"wall_s": ref_wall, "cpu_s": ref_cpu, "rps": ref_rate,
                               "share_of_capacity": ref_rate / capacity,
                               "steady_share_of_capacity": ref_steady / capacity},
        "ratio_to_reference": rate / ref_rate,
        "overhead_us_per_item": (cpu - ref_cpu) / args.items * 1e6,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    a, g = result["augment"], result["generate_reference"]
    print(f"{args.items} items, {requests} requests, capacity {capacity:.0f} req/s "
          f"({args.concurrency} / {args.latency_ms} ms), {os.cpu_count()} CPUs\n")
    print("| run | wall s | req/s | share of capacity, whole run | share, steady state | CPU s | CPU µs/item |")
    print("|---|---|---|---|---|---|---|")
    print(f"| seqit augment | {a['wall_s']:.1f} | {a['rps']:.0f} | {a['share_of_capacity']:.3f} | "
          f"{a['steady_share_of_capacity']:.3f} | {a['cpu_s']:.1f} | {a['cpu_us_per_item']:.0f} |")
    print(f"| seqit generate --endpoint (reference, same requests) | {g['wall_s']:.1f} | {g['rps']:.0f} | "
          f"{g['share_of_capacity']:.3f} | {g['steady_share_of_capacity']:.3f} | {g['cpu_s']:.1f} | |")
    print(f"\naugment / reference throughput: {result['ratio_to_reference']:.3f}; "
          f"augmentation overhead over the bare client: {result['overhead_us_per_item']:.0f} µs CPU per item")
    # The floor is on the steady state (as the arrival rate at the server), which leaves
    # out process start-up, reading and writing the data and the last chains draining.
    if a["steady_share_of_capacity"] < 0.9:
        sys.exit(f"FLOOR MISSED: steady state {a['steady_share_of_capacity']:.3f} of capacity < 0.9")


if __name__ == "__main__":
    main()
