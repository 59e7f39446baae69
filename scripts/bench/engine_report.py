"""Driver of scripts/bench/engine (see there): runs every engine in its own process and
writes the Markdown tables.

1. llama-bench style tests on token prompts of exact lengths (the same token ids for
   every engine; seqit gets their text with `--raw` and its token count is checked):
   ppN = B*N prompt tokens over the time to the first new token of every sequence;
   tgM = B*(M-1) new tokens over (time to the M-th new token - time to the first), after
   a short prompt. B sequences are decoded in one engine call. llama.cpp and PyTorch run
   one process per configuration (load, warm-up, --repeat timed runs); seqit one
   `seqit generate --stats` process per run (its `seconds` exclude the model load; tg
   subtracts a max_tokens=1 run of the same prompts).
2. Workload: Seq-Instruct classification requests (engine_workload.py) through
   `seqit serve` and `python -m llama_cpp.server` by closed-loop concurrent clients,
   idle and with one busy neighbour process.

Peak RSS: `ru_maxrss` of each child (wait4) for the tests, VmHWM of the server process
for the workload.
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from generate_report import background_activity, last_json, run, wait_until_quiet  # noqa: E402
import engine_workload as wl  # noqa: E402

ISA_FLAGS = ["avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avxvnni", "neon", "asimddp"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_info():
    model, flags = None, set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model is None:
                model = value.strip()
            elif key in ("flags", "Features"):
                flags |= set(value.split())
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip() or model
    except OSError:
        pass
    if "asimd" in flags:
        flags.add("neon")  # aarch64 lists Advanced SIMD (NEON) as asimd
    return model or "unknown CPU", {f: f in flags for f in ISA_FLAGS}


def git_describe(root):
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return f"{rev}{' + uncommitted changes' if dirty else ''}" if rev else "unknown"
    except OSError:
        return "unknown"


# ----------------------------------------------------------------------------- prompts

def prompts_child(args, lengths, classify_file=None):
    """Token prompts (and classification prompt token counts) from engine_prompts.py, run
    as a child: the driver must stay small, since every child's peak RSS starts from it."""
    argv = [sys.executable, str(HERE / "engine_prompts.py"), "--gguf", args.gguf, "--root", args.root,
            "--n-seq", str(max(args.batches)), "--lengths", *map(str, lengths)]
    if classify_file:
        argv += ["--classify", str(classify_file)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"engine: {shlex.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return last_json(proc.stdout)


# ----------------------------------------------------------------------------- tests

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="seqit-bench-engine."))
        self.activity = []
        self.failures = []
        self.env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
        self.env.pop("SEQIT_ISA", None)
        self.seqit_env = dict(self.env)
        if args.isa != "auto":
            self.seqit_env["SEQIT_ISA"] = args.isa

    def quiet(self):
        a = self.args.quiet_wait
        self.activity.append(wait_until_quiet(a) if a > 0 else background_activity(0.5))
        return self.activity[-1]

    def seqit_generate(self, texts, max_tokens, batch, tag):
        inp = self.work / f"{tag}.in.jsonl"
        out = self.work / f"{tag}.out.jsonl"
        inp.write_text("".join(json.dumps({"id": i, "prompt": t}) + "\n" for i, t in enumerate(texts)))
        for stale in (out, Path(str(out) + ".partial")):
            stale.unlink(missing_ok=True)
        argv = [self.args.seqit, "generate", "--model", self.args.gguf, "--raw", "--input", str(inp),
                "--output", str(out), "--max-tokens", str(max_tokens), "--ignore-eos",
                "--batch-size", str(batch), "--stats"]
        rc, _, stderr, rss, wall = run(argv, self.seqit_env)
        if rc != 0:
            raise RuntimeError(f"seqit generate failed (exit {rc}): {shlex.join(argv)}\n{stderr[-3000:]}")
        stats = last_json(stderr)
        outputs = [json.loads(line)["output"] for line in out.read_text().splitlines() if line.strip()]
        return stats, rss, outputs

    def helper(self, script, model, prompts_ids, new_tokens, tag):
        f = self.work / f"{tag}.tokens.json"
        f.write_text(json.dumps(prompts_ids))
        argv = [sys.executable, str(HERE / script), "--model", model, "--tokens-file", str(f),
                "--new-tokens", str(new_tokens), "--threads", str(self.args.threads),
                "--repeat", str(self.args.repeat)]
        rc, stdout, stderr, rss, wall = run(argv, self.env)
        if rc != 0:
            raise RuntimeError(f"{script} failed (exit {rc}): {shlex.join(argv)}\n{stderr[-3000:]}")
        return last_json(stdout), rss

    def tests(self, prompts):
        a = self.args
        engines = ["seqit", "llama.cpp"] + ([] if a.skip_torch else ["PyTorch f32"])
        tests = [(f"pp{n}", n, 1) for n in a.pp] + [(f"tg{a.tg}", a.tg_prompt, a.tg)]
        results = {}
        for test, n, new in tests:
            for b in a.batches:
                seqs = prompts[n][:b]
                texts = [t for t, _ in seqs]
                ids = [i for _, i in seqs]
                for engine in engines:
                    key = (test, b, engine)
                    tag = f"{test}_b{b}_{engine.split()[0].lower()}"
                    try:
                        results[key] = self.one_test(engine, test, b, n, new, texts, ids, tag)
                    except RuntimeError as err:
                        log(f"  {test} batch {b} {engine}: FAILED\n{err}")
                        self.failures.append(f"{test} b{b} {engine}: {str(err).splitlines()[0]}")
                        results[key] = None
                        continue
                    r = results[key]
                    log(f"  {test:7s} batch {b}  {engine:12s} {max(r['tok_s']):9.1f} tok/s  "
                        f"(runs: {', '.join(f'{x:.1f}' for x in r['tok_s'])}), peak RSS {r['rss_mib']:.0f} MiB, "
                        f"other runnable tasks before: {r['background']:.2f}")
        return results

    def one_test(self, engine, test, b, n, new, texts, ids, tag):
        a = self.args
        background = self.quiet()
        first_text = None
        notes = []
        if engine == "seqit":
            tok_s, rss, first_text = [], 0.0, None
            for rep in range(a.repeat):
                if rep:
                    self.quiet()
                stats, r1, out1 = self.seqit_generate(texts, 1, b, f"{tag}_first_{rep}")
                rss = max(rss, r1)
                first_text = out1
                if stats.get("prompt_tokens") != b * n:
                    notes.append(f"seqit counted {stats.get('prompt_tokens')} prompt tokens, expected {b * n}")
                if new == 1:
                    tok_s.append(b * n / stats["seconds"])
                    continue
                stats_all, r2, _ = self.seqit_generate(texts, new, b, f"{tag}_all_{rep}")
                rss = max(rss, r2)
                if stats_all.get("generated_tokens") != b * new:
                    notes.append(f"seqit generated {stats_all.get('generated_tokens')} tokens, expected {b * new}")
                decode_s = stats_all["seconds"] - stats["seconds"]
                tok_s.append(b * (new - 1) / decode_s if decode_s > 0 else float("nan"))
        else:
            script, model = (("engine_llamacpp.py", a.gguf) if engine == "llama.cpp" else ("engine_torch.py", a.hf))
            res, rss = self.helper(script, model, ids, new, tag)
            if new == 1:
                tok_s = [b * n / r["first_s"] for r in res["runs"]]
            else:
                tok_s = [b * (new - 1) / (r["total_s"] - r["first_s"]) for r in res["runs"]]
            first_text = res.get("first_texts")
        return {"tok_s": tok_s, "rss_mib": rss, "background": background, "first_tokens": first_text,
                "notes": sorted(set(notes))}

    # ------------------------------------------------------------------------- servers

    def start_server(self, kind, port):
        a = self.args
        url = f"http://127.0.0.1:{port}"
        if kind == "seqit":
            argv = [a.seqit, "serve", "--model", a.gguf, "--host", "127.0.0.1", "--port", str(port),
                    "--batch-size", str(a.concurrency)]
            env, ready = self.seqit_env, url + "/health"
        elif kind == "llama.cpp":
            argv = [sys.executable, "-m", "llama_cpp.server", "--model", a.gguf, "--host", "127.0.0.1",
                    "--port", str(port), "--n_ctx", str(a.ctx), "--n_batch", "512", "--n_ubatch", "512",
                    "--n_threads", str(a.threads), "--n_threads_batch", str(a.threads), "--verbose", "False"]
            env, ready = self.env, url + "/v1/models"
        else:  # native llama-server
            slots = a.llama_server_slots or a.concurrency
            argv = [a.llama_server, "-m", a.gguf, "--host", "127.0.0.1", "--port", str(port),
                    "-np", str(slots), "-c", str(a.ctx * slots), "-b", "2048", "-ub", "512",
                    "-t", str(a.threads), "-tb", str(a.threads), "--no-warmup"]
            env, ready = self.env, url + "/health"
        logf = open(self.work / f"server-{kind}-{port}.log", "w")
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                logf.close()
                tail = (self.work / f"server-{kind}-{port}.log").read_text()[-3000:]
                raise RuntimeError(f"{kind} server exited ({proc.returncode}): {shlex.join(argv)}\n{tail}")
            try:
                with urllib.request.urlopen(ready, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(f"{kind} server not ready after 300 s: {shlex.join(argv)}")
            time.sleep(0.5)
        return proc, url, argv

    def workload(self, prompts):
        a = self.args
        kinds = ["seqit", "llama.cpp"] + (["llama-server"] if a.llama_server else [])
        results = {}
        for neighbour in (False, True):
            for kind in kinds:
                key = (kind, neighbour)
                label = f"{kind}{' + busy neighbour' if neighbour else ''}"
                background = self.quiet()
                port = free_port()
                busy = None
                try:
                    proc, url, argv = self.start_server(kind, port)
                except RuntimeError as err:
                    log(f"  workload {label}: FAILED\n{err}")
                    self.failures.append(f"workload {label}: {str(err).splitlines()[0]}")
                    results[key] = None
                    continue
                try:
                    model = wl.server_model(url)
                    warm = [{"id": "warm-up", "messages": [{"role": "user", "content": "Say hello."}]}]
                    wl.run_load(url, warm, 1, 4, model)
                    if neighbour:
                        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        time.sleep(0.5)
                    res = wl.run_load(url, prompts, a.concurrency, a.max_tokens, model,
                                      time_limit=a.workload_limit or None)
                    rss = vm_hwm(proc.pid)
                except (RuntimeError, OSError) as err:
                    log(f"  workload {label}: FAILED\n{err}")
                    self.failures.append(f"workload {label}: {str(err).splitlines()[0]}")
                    results[key] = None
                    continue
                finally:
                    if busy is not None:
                        stop(busy)
                    stop(proc)
                done = [r for r in res["requests"] if r]
                lat = [r["latency_s"] for r in done]
                ptoks = [r["prompt_tokens"] for r in done if r["prompt_tokens"] is not None]
                ctoks = [r["completion_tokens"] for r in done if r["completion_tokens"] is not None]
                results[key] = {
                    "server": argv, "requests": len(lat), "sent_of": len(prompts), "wall_s": res["wall_s"],
                    "requests_per_s": len(lat) / res["wall_s"],
                    "p50_s": wl.percentile(lat, 0.50), "p99_s": wl.percentile(lat, 0.99),
                    "mean_s": statistics.mean(lat), "max_s": max(lat),
                    "mean_prompt_tokens": statistics.mean(ptoks) if ptoks else None,
                    "completion_tokens": sum(ctoks) if ctoks else None,
                    "peak_rss_mib": rss, "background": background,
                    "outputs": [r["output"] if r else None for r in res["requests"]],
                }
                r = results[key]
                log(f"  workload {label:32s} {len(lat)}/{len(prompts)} requests  {r['requests_per_s']:6.2f} req/s  p50 {r['p50_s']:6.2f} s  "
                    f"p99 {r['p99_s']:6.2f} s  wall {r['wall_s']:6.1f} s  peak RSS {rss:.0f} MiB  "
                    f"(other runnable tasks before: {background:.2f})")
        return results


def server_version(binary):
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        text = (out.stdout + out.stderr).strip().splitlines()
        return "; ".join(line.strip() for line in text if line.startswith(("version", "built")))
    except (OSError, subprocess.TimeoutExpired):
        return "version unknown"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm(pid):
    """Peak resident set size of a live process, MiB (VmHWM)."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- report

def fmt(x, digits=1):
    return "n/a" if x is None or x != x else f"{x:,.{digits}f}"


def best(r):
    return None if r is None else max(r["tok_s"])


def cell(r, repeat):
    if r is None:
        return "failed"
    if repeat == 1:
        return fmt(best(r))
    return f"{fmt(best(r))} ({fmt(statistics.median(r['tok_s']))})"


def ratio(x, y):
    return "n/a" if x is None or y is None or y == 0 else f"{x / y:.2f}"


def package_versions():
    """Installed versions, read from the package metadata (importing torch here would
    raise every child's peak RSS)."""
    from importlib import metadata

    out = {}
    for key, dist in (("llama_cpp", "llama-cpp-python"), ("torch", "torch"), ("transformers", "transformers")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqit", required=True)
    ap.add_argument("--seqit-label", help="what the seqit binary is (default: the working tree's commit)")
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--hf", help="Hugging Face directory converted from the GGUF (PyTorch)")
    ap.add_argument("--root", default=str(HERE.parent.parent))
    ap.add_argument("--isa", default="auto", choices=["auto", "avx2", "avx512", "scalar"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pp", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--tg-prompt", type=int, default=16, help="prompt tokens before the tg test")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-workload", action="store_true")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--workload-limit", type=float, default=600,
                    help="seconds after which a workload row sends no more requests (0: none)")
    ap.add_argument("--ctx", type=int, default=2048, help="context per llama.cpp slot in the workload")
    ap.add_argument("--llama-server", help="a native llama-server binary: also run the workload on it")
    ap.add_argument("--llama-server-slots", type=int, help="llama-server -np (default: --concurrency)")
    ap.add_argument("--quiet-wait", type=float, default=0.0)
    ap.add_argument("--quick", action="store_true", help="recorded in the report only")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    # Killed: unwind (the `finally` blocks stop servers and neighbours) instead of dying.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not args.skip_torch and not args.hf:
        ap.error("--hf is needed unless --skip-torch")

    root = Path(args.root)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu, flags = cpu_info()
    versions = package_versions()
    seqit_reads_isa = b"SEQIT_ISA" in Path(args.seqit).read_bytes()
    bench = Bench(args)
    started = time.time()

    tests, workload, prompt_info = {}, {}, {}
    if not args.skip_tests:
        lengths = sorted(set(args.pp + [args.tg_prompt]))
        log(f"engine: making token prompts ({', '.join(map(str, lengths))} tokens x {max(args.batches)} sequences)")
        prompts = {int(n): v for n, v in prompts_child(args, lengths)["tokens"].items()}
        log("engine: llama-bench style tests")
        tests = bench.tests(prompts)
    if not args.skip_workload:
        cls = wl.classify_prompts(root, args.requests)
        cls_file = out_dir / "workload_prompts.jsonl"
        cls_file.write_text("".join(json.dumps(p) + "\n" for p in cls))
        prompt_info = prompts_child(args, [], cls_file).get("classify", {})
        log(f"engine: workload, {len(cls)} classification requests ({prompt_info.get('summary', '')}), "
            f"{args.concurrency} concurrent clients, max_tokens {args.max_tokens}")
        workload = bench.workload(cls)

    # ------------------------------------------------------------------- Markdown
    torch_line = ("skipped" if args.skip_torch else
                  f"torch {versions['torch']}, transformers {versions['transformers']}, f32")
    present = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in flags.items())
    activity = bench.activity or [0.0]
    isa_line = ("auto (SEQIT_ISA unset)" if args.isa == "auto" else
                f"SEQIT_ISA={args.isa}" + ("" if seqit_reads_isa else " (this seqit build does not read SEQIT_ISA: ignored)"))
    lines = [
        "# Engine benchmark (`scripts/bench/engine`)",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {cpu}, {os.cpu_count()} CPUs |",
        f"| ISA flags | {present} |",
        f"| seqit ISA | {isa_line} |",
        f"| threads | {args.threads} per engine |",
        f"| seqit | `{args.seqit}` (release), {args.seqit_label or 'working tree at commit ' + git_describe(root)} |",
        f"| llama.cpp | llama-cpp-python {versions['llama_cpp']} (llama.cpp built from source, native CPU) |",
        f"| PyTorch | {torch_line} |",
    ] + ([f"| llama-server | `{args.llama_server}`, {server_version(args.llama_server)} |"] if args.llama_server else []) + [
        f"| model | `{Path(args.gguf).name}` |",
        f"| runs | {args.repeat} per test configuration{' (--quick)' if args.quick else ''}; workload once per row |",
        f"| machine load | other runnable tasks just before each run: mean {statistics.mean(activity):.2f}, "
        f"max {max(activity):.2f} (0 = idle) |",
        f"| date | {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(started))} |",
        "",
    ]
    if tests:
        engines = ["seqit", "llama.cpp"] + ([] if args.skip_torch else ["PyTorch f32"])
        names = sorted({(t, b) for t, b, _ in tests}, key=lambda k: (k[0].startswith("tg"), int(k[0][2:]), k[1]))
        ranked = "best of runs (median)" if args.repeat > 1 else "one run"
        head = "| test | batch | " + " | ".join(f"{e} tok/s" for e in engines) + " | seqit / llama.cpp"
        head += "" if args.skip_torch else " | seqit / PyTorch"
        head += " | load before (" + " / ".join(e.split()[0] for e in engines) + ")"
        lines += [
            f"## Prompt processing and generation (tokens/s, {ranked})",
            "",
            head + " |",
            "|---|---:|" + "---:|" * (len(engines) + (1 if args.skip_torch else 2)) + "---|",
        ]
        for t, b in names:
            row = [t, str(b)] + [cell(tests.get((t, b, e)), args.repeat) for e in engines]
            s = best(tests.get((t, b, "seqit")))
            row.append(ratio(s, best(tests.get((t, b, "llama.cpp")))))
            if not args.skip_torch:
                row.append(ratio(s, best(tests.get((t, b, "PyTorch f32")))))
            row.append(" / ".join("-" if tests.get((t, b, e)) is None else f"{tests[(t, b, e)]['background']:.1f}"
                                  for e in engines))
            lines.append("| " + " | ".join(row) + " |")
        lines += [
            "",
            f"ppN: one prompt of N tokens per sequence, B sequences in one engine call, B*N / time to the first new"
            f" token of every sequence. tg{args.tg}: {args.tg} new tokens per sequence after a {args.tg_prompt}-token"
            f" prompt, B*{args.tg - 1} / (time to the last token - time to the first). Greedy, EOS ignored, model load"
            " excluded. llama.cpp: low-level llama_decode with n_seq_max = B, n_batch 2048, n_ubatch 512;"
            " PyTorch: one forward pass over the prompts, then one per token with the KV cache."
            " Load before: other runnable tasks on the machine just before the (first) run of each engine"
            " (0 = idle; on a 2-core machine 1 or more skews the figures, llama.cpp's spinning thread pool most).",
            "",
            "### Peak RSS (MiB) of each engine process",
            "",
            "| test | batch | " + " | ".join(engines) + " |",
            "|---|---:|" + "---:|" * len(engines),
        ]
        for t, b in names:
            row = [t, str(b)] + [("failed" if tests.get((t, b, e)) is None else fmt(tests[(t, b, e)]["rss_mib"], 0))
                                 for e in engines]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        notes = sorted({n for r in tests.values() if r for n in r["notes"]})
        agree = []
        for t, b in names:
            s, l = tests.get((t, b, "seqit")), tests.get((t, b, "llama.cpp"))
            if s and l and s["first_tokens"] and l["first_tokens"]:
                same = sum(x.strip() == y.strip() for x, y in zip(s["first_tokens"], l["first_tokens"]))
                agree.append(f"{t} b{b} {same}/{len(l['first_tokens'])}")
        if agree:
            lines.append("First new token, seqit equal to llama.cpp: " + ", ".join(agree) + ".")
        for n in notes:
            lines.append(f"Note: {n}.")
        lines.append("")
    if workload:
        kinds = [k for k in ("seqit", "llama.cpp", "llama-server") if any(kk[0] == k for kk in workload)]
        label = {"seqit": "`seqit serve`", "llama.cpp": "`python -m llama_cpp.server`",
                 "llama-server": "llama.cpp `llama-server` (native)"}
        slots = {"seqit": f"{args.concurrency} (batch)", "llama.cpp": "1 (requests serialized)",
                 "llama-server": f"{args.llama_server_slots or args.concurrency} (-np)"}
        lines += [
            f"## Workload: {args.requests} Seq-Instruct classification requests, {args.concurrency} concurrent clients",
            "",
            f"Prompts: {prompt_info.get('summary', 'n/a')}; `max_tokens` {args.max_tokens}, temperature 0;"
            f" closed loop (each client sends its next request when its reply is in), loopback HTTP.",
            "",
            "| server | slots | neighbour | requests | req/s | p50 latency (s) | p99 latency (s) | wall (s)"
            " | completion tokens | peak RSS (MiB) | load before |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for neighbour in (False, True):
            for k in kinds:
                r = workload.get((k, neighbour))
                nb = "1 busy process" if neighbour else "none"
                if r is None:
                    lines.append(f"| {label[k]} | {slots[k]} | {nb} | failed | | | | | | | |")
                    continue
                sent = (f"{r['requests']}" if r["requests"] == r["sent_of"] else
                        f"{r['requests']} of {r['sent_of']} (stopped at {args.workload_limit:.0f} s)")
                lines.append(f"| {label[k]} | {slots[k]} | {nb} | {sent} | {r['requests_per_s']:.2f} | {r['p50_s']:.2f} | "
                             f"{r['p99_s']:.2f} | {r['wall_s']:.1f} | {r['completion_tokens']} | "
                             f"{fmt(r['peak_rss_mib'], 0)} | {r['background']:.1f} |")
        lines += ["", "| seqit / llama.cpp | neighbour | req/s | p50 latency | p99 latency |", "|---|---|---:|---:|---:|"]
        for other in [k for k in kinds if k != "seqit"]:
            for neighbour in (False, True):
                s, o = workload.get(("seqit", neighbour)), workload.get((other, neighbour))
                if s and o:
                    lines.append(f"| vs {label[other]} | {'1 busy process' if neighbour else 'none'} | "
                                 f"{s['requests_per_s'] / o['requests_per_s']:.2f} | {s['p50_s'] / o['p50_s']:.2f} | "
                                 f"{s['p99_s'] / o['p99_s']:.2f} |")
        lines.append("")
        lines.append("Latency ratios below 1 mean seqit answers faster. The busy neighbour is"
                     " `python -c 'while True: pass'`, not pinned, running during the measured requests only.")
        if "llama.cpp" in kinds:
            lines.append(f"`llama_cpp.server` handles one request at a time (no parallel slots) and reuses the"
                         f" KV cache of the longest prefix shared with the previous request (all prompts share"
                         f" their first {prompt_info.get('shared_prefix', '?')} tokens); `seqit serve` batches up to"
                         f" {args.concurrency} queued requests (left-padded to the longest) and has no prefix cache.")
        s, o = workload.get(("seqit", False)), workload.get(("llama.cpp", False))
        if s and o:
            both = [(x, y) for x, y in zip(s["outputs"], o["outputs"]) if x is not None and y is not None]
            same = sum(x == y for x, y in both)
            lines.append(f"Replies identical between seqit and llama.cpp (idle runs): {same}/{len(both)}.")
        lines.append("")
    if bench.failures:
        lines += ["## Failures", ""] + [f"- {f}" for f in bench.failures] + [""]
    table = "\n".join(lines)
    print(table)
    (out_dir / "results.md").write_text(table + "\n")
    (out_dir / "results.json").write_text(json.dumps({
        "seqit": args.seqit, "seqit_label": args.seqit_label or git_describe(root),
        "cpu": cpu, "isa_flags": flags, "isa": args.isa, "seqit_reads_isa": seqit_reads_isa,
        "threads": args.threads, "repeat": args.repeat, "versions": versions,
        "tests": {f"{t} b{b} {e}": v for (t, b, e), v in tests.items()},
        "workload": {f"{k}{' busy' if n else ''}": v for (k, n), v in workload.items()},
        "workload_prompts": prompt_info, "background_activity": bench.activity, "failures": bench.failures,
    }, indent=1))
    if bench.failures:
        log(f"engine: wrote {out_dir / 'results.md'} and results.json; FAILED runs (scratch files and server"
            f" logs kept in {bench.work})")
        return 1
    shutil.rmtree(bench.work, ignore_errors=True)
    log(f"engine: wrote {out_dir / 'results.md'} and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
