"""Driver of scripts/bench/client (see there). Standard library only; runs every client
as a child process and measures its wall time and CPU time (user + system, from
getrusage of the children)."""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request


def run_child(argv, env=None):
    """Runs argv; returns (wall seconds, cpu seconds, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, cpu, proc.stderr


def start_server(faultserver, latency_ms, max_concurrency, log):
    proc = subprocess.Popen(
        [faultserver, "--port", "0", "--latency-ms", str(latency_ms), "--max-concurrency", str(max_concurrency),
         "--log", log],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        sys.exit(f"the fault server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


def server_requests(url):
    with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/_fault/stats") as r:
        return json.load(r)["requests"]


def log_size(path):
    with open(path) as f:
        return sum(1 for _ in f)


def steady_state_rps(path, skip):
    """Arrivals per second at the server between 1 s after the first and 1 s before the
    last arrival of the run whose entries start at line `skip` of the server log."""
    with open(path) as f:
        times = sorted(json.loads(line)["at_ms"] for i, line in enumerate(f) if i >= skip)
    lo, hi = times[0] + 1000.0, times[-1] - 1000.0
    inside = sum(1 for t in times if lo <= t < hi)
    return inside / ((hi - lo) / 1000.0)


def write_prompts(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "prompt": f"Benchmark prompt number {i}: say something short."}) + "\n")


def count_lines(path):
    with open(path) as f:
        return sum(1 for _ in f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seqit", required=True)
    p.add_argument("--faultserver", required=True)
    p.add_argument("--python", required=True, help="python of the venv with `openai`")
    p.add_argument("--work", required=True)
    p.add_argument("--requests", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--latency-ms", type=int, default=200)
    p.add_argument("--cache-items", type=int, default=100000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    n, conc, latency = args.requests, args.concurrency, args.latency_ms / 1000.0
    capacity = conc / latency  # requests per second the server can answer at this concurrency
    results = {
        "requests": n,
        "concurrency": conc,
        "latency_ms": args.latency_ms,
        "server_capacity_rps": capacity,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }

    server_log = os.path.join(args.work, "server-log.jsonl")
    server, url = start_server(args.faultserver, args.latency_ms, conc, server_log)
    try:
        prompts = os.path.join(args.work, "prompts.jsonl")
        write_prompts(prompts, n)
        common = ["--endpoint", url, "--model", "fault-model", "--input", prompts, "--max-tokens", "16",
                  "--concurrency", str(conc)]

        # Warm-up (page cache, binaries), not measured.
        warm = os.path.join(args.work, "warm.jsonl")
        write_prompts(warm, 512)
        run_child([args.seqit, "generate", "--endpoint", url, "--model", "fault-model", "--input", warm,
                   "--output", os.path.join(args.work, "warm.out.jsonl"), "--no-cache", "--max-tokens", "16",
                   "--concurrency", str(conc)])

        # seqit runs `--repeat` times (best wall time kept: the machine is shared and
        # noisy); the cache variant starts from an empty cache each time.
        for name, extra in [("seqit_no_cache", ["--no-cache"]),
                            ("seqit_cache", ["--cache", os.path.join(args.work, "run-cache.sqlite")])]:
            runs = []
            for _ in range(args.repeat):
                out = os.path.join(args.work, f"{name}.out.jsonl")
                cache_file = os.path.join(args.work, "run-cache.sqlite")
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(cache_file + suffix):
                        os.remove(cache_file + suffix)
                skip = log_size(server_log)
                wall, cpu, _ = run_child([args.seqit, "generate", *common, "--output", out, *extra])
                assert count_lines(out) == n, f"{name}: {count_lines(out)} lines"
                steady = steady_state_rps(server_log, skip)
                runs.append({"wall_s": wall, "cpu_s": cpu, "rps": n / wall, "share_of_capacity": n / wall / capacity,
                             "steady_share_of_capacity": steady / capacity, "cpu_s_per_10k": cpu * 10000 / n})
                print(f"{name}: {n} requests in {wall:.2f}s = {n / wall:.0f} req/s "
                      f"({n / wall / capacity:.3f} of capacity {capacity:.0f}; steady state {steady / capacity:.3f}), "
                      f"CPU {cpu:.2f}s", flush=True)
            best = min(runs, key=lambda r: r["wall_s"])
            results[name] = dict(best, runs=runs)

        out = os.path.join(args.work, "openai.out.jsonl")
        skip = log_size(server_log)
        wall, cpu, _ = run_child([args.python, os.path.join(here, "client_openai.py"), url, "fault-model", prompts,
                                  out, str(conc), "16"])
        assert count_lines(out) == n
        steady = steady_state_rps(server_log, skip)
        results["python_openai"] = {"wall_s": wall, "cpu_s": cpu, "rps": n / wall,
                                    "share_of_capacity": n / wall / capacity,
                                    "steady_share_of_capacity": steady / capacity, "cpu_s_per_10k": cpu * 10000 / n}
        print(f"python_openai: {n} requests in {wall:.2f}s = {n / wall:.0f} req/s "
              f"({n / wall / capacity:.3f} of capacity; steady state {steady / capacity:.3f}), CPU {cpu:.2f}s",
              flush=True)
        for name in ("seqit_no_cache", "seqit_cache"):
            results[name]["cpu_ratio_vs_openai"] = results[name]["cpu_s"] / results["python_openai"]["cpu_s"]

        # Cache lookups on resume: 100k answers imported from a Batch API results file,
        # then the same job run against the endpoint completes from the cache alone.
        m = args.cache_items
        big = os.path.join(args.work, "prompts-100k.jsonl")
        write_prompts(big, m)
        batch = os.path.join(args.work, "batch.jsonl")
        cache = os.path.join(args.work, "cache-100k.sqlite")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(cache + suffix):
                os.remove(cache + suffix)
        run_child([args.seqit, "batch", "export", "--input", big, "--output", batch, "--model", "fault-model",
                   "--max-tokens", "16"])
        results_file = os.path.join(args.work, "batch-results.jsonl")
        with open(batch) as src, open(results_file, "w") as dst:
            for i, line in enumerate(src):
                req = json.loads(line)
                body = {"id": f"c{i}", "object": "chat.completion", "model": "fault-model",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"cached answer {i}"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
                dst.write(json.dumps({"id": f"b{i}", "custom_id": req["custom_id"],
                                      "response": {"status_code": 200, "request_id": f"q{i}", "body": body},
                                      "error": None}) + "\n")
        import_wall, _, _ = run_child([args.seqit, "batch", "import", "--results", results_file, "--cache", cache])
        before = server_requests(url)
        out = os.path.join(args.work, "resume-100k.out.jsonl")
        wall, cpu, _ = run_child([args.seqit, "generate", "--endpoint", url, "--model", "fault-model", "--input", big,
                                  "--output", out, "--max-tokens", "16", "--cache", cache])
        asked = server_requests(url) - before
        assert asked == 0, f"the resumed run sent {asked} requests"
        assert count_lines(out) == m
        results["cache_resume"] = {"items": m, "wall_s": wall, "cpu_s": cpu, "requests_sent": asked,
                                   "import_wall_s": import_wall}
        print(f"cache resume: {m} cached items, whole run {wall:.2f}s (CPU {cpu:.2f}s), {asked} requests sent; "
              f"import took {import_wall:.2f}s", flush=True)
    finally:
        server.terminate()
        server.wait()

    results["load_average_at_end"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    s, c, o = results["seqit_no_cache"], results["seqit_cache"], results["python_openai"]
    print()
    print(f"| client ({n:,} requests) | wall (s) | req/s | share of capacity, whole run | share, steady state "
          f"| CPU (s) per 10k requests | CPU vs openai |")
    print("|---|---|---|---|---|---|---|")
    for label, r in [("seqit, --no-cache", s), ("seqit, with cache", c), ("Python openai AsyncOpenAI", o)]:
        ratio = r["cpu_s"] / o["cpu_s"]
        print(f"| {label} | {r['wall_s']:.2f} | {r['rps']:.0f} | {r['share_of_capacity']:.3f} | "
              f"{r['steady_share_of_capacity']:.3f} | {r['cpu_s_per_10k']:.2f} | {ratio:.3f} |")
    cr = results["cache_resume"]
    print(f"\nload average: {results['load_average_at_start'][0]:.1f} at start, "
          f"{results['load_average_at_end'][0]:.1f} at end ({os.cpu_count()} CPUs); seqit rows: best of {args.repeat}")
    print(f"\ncache resume: {cr['items']} cached items -> {cr['wall_s']:.2f}s wall, {cr['requests_sent']} requests")
    floors = [
        ("throughput share >= 0.95", s["share_of_capacity"] >= 0.95),
        ("CPU <= half of openai", s["cpu_s"] <= 0.5 * o["cpu_s"]),
        ("100k cache resume <= 2 s", cr["wall_s"] <= 2.0),
    ]
    for label, ok in floors:
        print(f"floor {label}: {'PASS' if ok else 'FAIL'}")
    if not all(ok for _, ok in floors):
        sys.exit(1)


if __name__ == "__main__":
    main()
