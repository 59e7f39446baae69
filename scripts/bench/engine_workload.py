"""Realistic workload of scripts/bench/engine: Seq-Instruct classification requests sent
to an OpenAI-compatible server by concurrent clients.

The prompts are the classification requests `seqit augment` sends (see
crates/seqit-augment/src/prompts.rs, `Prompts::classify`), assembled here from the same
files: the system message `classify_system` and the user message `classify_user` of
prompts/seq-instruct/v2/templates.toml, with all five worked examples of
classify_examples.toml (rendered with `classify_example`, in an order drawn per item, as
seqit does) and the instruction (and input) of one item of the demo data under
examples/data/ (seed.jsonl, then sit-demo.jsonl). The order of the examples comes from
Python's `random` here, not from seqit's RNG, so the texts are the same kind but not
byte-identical to a given `seqit augment` run.

The load is closed-loop: `concurrency` client threads (standard library `http.client`,
one keep-alive connection each) take the next prompt as soon as their previous reply has
arrived. Latency is measured per request from sending to the last byte of the reply.

    python engine_workload.py prompts --root . --n 64 > prompts.jsonl   # the prompts
    python engine_workload.py load --url http://127.0.0.1:8000 --prompts prompts.jsonl
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

CLASSIFY_SHOTS = 5  # crates/seqit-augment/src/prompts.rs


def render(template: str, values: dict) -> str:
    """Single-pass `{{name}}` substitution, as seqit-augment's `render`."""
    out, rest = [], template
    while True:
        start = rest.find("{{")
        if start < 0:
            out.append(rest)
            return "".join(out)
        out.append(rest[:start])
        after = rest[start + 2 :]
        end = after.find("}}")
        if end < 0:
            out.append(rest[start:])
            return "".join(out)
        name = after[:end].strip()
        out.append(values[name] if name in values else "{{" + after[:end] + "}}")
        rest = after[end + 2 :]


def classify_prompts(root: Path, n: int) -> list:
    pdir = root / "prompts" / "seq-instruct" / "v2"
    templates = tomllib.loads((pdir / "templates.toml").read_text())
    shots = tomllib.loads((pdir / "classify_examples.toml").read_text())["example"]
    if len(shots) < CLASSIFY_SHOTS:
        sys.exit(f"{pdir}/classify_examples.toml has {len(shots)} examples, {CLASSIFY_SHOTS} needed")
    items = []
    for name in ("seed.jsonl", "sit-demo.jsonl"):
        path = root / "examples" / "data" / name
        items += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not items:
        sys.exit("no items under examples/data/")

    def input_block(text):
        return render(templates["input_block"], {"input": text}) if text else ""

    prompts = []
    for i in range(n):
        item = items[i % len(items)]
        rng = random.Random(f"seqit-bench-engine-{i}")
        picked = rng.sample(range(len(shots)), CLASSIFY_SHOTS)
        examples = [
            render(templates["classify_example"], {
                "instruction": shots[k]["instruction"],
                "input_block": input_block(shots[k].get("input", "")),
                "answer": shots[k]["answer"],
            })
            for k in picked
        ]
        user = render(templates["classify_user"], {
            "examples": "\n\n".join(examples),
            "instruction": item["instruction"],
            "input_block": input_block(item.get("input", "")),
        })
        prompts.append({
            "id": f"{item['id']}#{i}",
            "messages": [
                {"role": "system", "content": templates["classify_system"]},
                {"role": "user", "content": user},
            ],
        })
    return prompts


def server_model(url: str) -> str:
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
        data = json.load(r)["data"]
    return data[0]["id"]


def run_load(url: str, prompts: list, concurrency: int, max_tokens: int, model: str = None,
             timeout: float = 1800.0, time_limit: float = None) -> dict:
    """Sends every prompt once with `concurrency` closed-loop clients. Returns wall time,
    per-request latencies and replies (in prompt order). With `time_limit` (seconds), no
    request is sent after that much time; the ones not sent are None in `requests`."""
    u = urllib.parse.urlsplit(url)
    model = model or server_model(url)
    results = [None] * len(prompts)
    next_index = iter(range(len(prompts)))
    lock = threading.Lock()
    errors = []

    def post(conn, body):
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        while True:
            if time_limit is not None and time.perf_counter() - started > time_limit:
                break
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            body = json.dumps({
                "model": model,
                "messages": prompts[i]["messages"],
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "top_p": 1.0,
                "seed": 0,
            }).encode()
            start = time.perf_counter()
            try:
                status, data = post(conn, body)
            except (http.client.HTTPException, ConnectionError, OSError):
                # The server closed the kept-alive connection: once more on a new one.
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
                start = time.perf_counter()
                try:
                    status, data = post(conn, body)
                except Exception as err:  # noqa: BLE001 - reported below
                    status, data = -1, str(err).encode()
            end = time.perf_counter()
            if status != 200:
                with lock:
                    errors.append(f"request {i}: HTTP {status}: {data[:300]!r}")
                continue
            reply = json.loads(data)
            usage = reply.get("usage") or {}
            results[i] = {
                "start": start,
                "end": end,
                "latency_s": end - start,
                "output": reply["choices"][0]["message"]["content"],
                "finish_reason": reply["choices"][0].get("finish_reason"),
                "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens"),
            }
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(prompts)} requests failed, first: {errors[0]}")
    return {"wall_s": wall, "requests": results, "model": model}


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    v = sorted(values)
    if not v:
        return float("nan")
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts")
    p.add_argument("--root", default=".")
    p.add_argument("--n", type=int, default=64)
    q = sub.add_parser("load")
    q.add_argument("--url", required=True)
    q.add_argument("--prompts", required=True)
    q.add_argument("--concurrency", type=int, default=16)
    q.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    if args.cmd == "prompts":
        for prompt in classify_prompts(Path(args.root), args.n):
            print(json.dumps(prompt))
    else:
        prompts = [json.loads(line) for line in open(args.prompts) if line.strip()]
        res = run_load(args.url, prompts, args.concurrency, args.max_tokens)
        lat = [r["latency_s"] for r in res["requests"] if r]
        print(json.dumps({"wall_s": res["wall_s"], "requests_per_s": len(lat) / res["wall_s"],
                          "p50_s": percentile(lat, 0.5), "p99_s": percentile(lat, 0.99)}))


if __name__ == "__main__":
    main()
