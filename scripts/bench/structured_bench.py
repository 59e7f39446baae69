"""Decode speed with and without a JSON-schema constraint: seqit at batch 1 and 8
against llama.cpp (llama-cpp-python, `response_format` json_object + schema, which it
turns into a GBNF grammar), same GGUF, same prompts, greedy, one thread count.

Called by scripts/bench/structured; prints a Markdown table and writes it to --out.
Tokens/s is generated tokens over the generation wall time (model loading excluded;
prompt processing included). The unconstrained run of each engine gets the mean length of
its constrained replies as max_tokens, so the two differ only by the constraint. "Valid" counts replies that
parse as JSON and have the schema's required keys.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from engine_report import cpu_info  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 40},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
    },
    "required": ["name", "age", "city", "hobbies"],
    "additionalProperties": False,
}
SUBJECTS = ["a baker", "a pilot", "a child", "a painter", "a farmer", "a nurse", "a chess player", "a sailor"]


def prompts():
    return [
        f"Invent {s} and describe them as a JSON object with name, age, city and hobbies."
        for s in SUBJECTS
    ]


def valid(text):
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and all(k in value for k in SCHEMA["required"])


def run_seqit(binary, batch, schema_file, max_tokens, threads, work):
    inputs = work / "prompts.jsonl"
    inputs.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(prompts())))
    output = work / f"out-{batch}-{schema_file is not None}.jsonl"
    output.unlink(missing_ok=True)
    cmd = [binary, "generate", "--input", str(inputs), "--output", str(output), "--max-tokens", str(max_tokens),
           "--batch-size", str(batch), "--stats"]
    if schema_file:
        cmd += ["--json-schema", str(schema_file)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"seqit failed: {done.stderr}")
    stats = json.loads([l for l in done.stderr.splitlines() if l.startswith("{")][-1])
    replies = [json.loads(l)["output"] for l in output.read_text().splitlines()]
    return stats["generated_tokens"], stats["seconds"], sum(map(valid, replies))


def run_llamacpp(gguf, constrained, max_tokens, threads):
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    generated, ok = 0, 0
    start = time.perf_counter()
    for p in prompts():
        kwargs = {"response_format": {"type": "json_object", "schema": SCHEMA}} if constrained else {}
        reply = llm.create_chat_completion(
            messages=[{"role": "user", "content": p}], max_tokens=max_tokens, temperature=0, **kwargs
        )
        generated += reply["usage"]["completion_tokens"]
        ok += valid(reply["choices"][0]["message"]["content"])
    return generated, time.perf_counter() - start, ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqit", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seqit-structured-"))
    schema_file = work / "schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    rows = []
    for engine, batch in [("seqit", 1), ("seqit", 8), ("llama.cpp", 1)]:
        # Constrained first; the free run then gets the same token budget per reply (the
        # JSON replies are shorter than max_tokens), so both spend the same share of
        # their time on the prompts.
        budget = args.max_tokens
        for constrained in (True, False):
            if engine == "seqit":
                tokens, seconds, ok = run_seqit(args.seqit, batch, schema_file if constrained else None,
                                                budget, args.threads, work)
            else:
                tokens, seconds, ok = run_llamacpp(args.gguf, constrained, budget, args.threads)
            if constrained:
                budget = max(1, round(tokens / len(SUBJECTS)))
            rows.append((engine, batch, constrained, tokens, seconds, ok))
            print(f"{engine} batch {batch} {'schema' if constrained else 'free'}: {tokens} tokens in "
                  f"{seconds:.2f} s, {ok}/8 valid", file=sys.stderr, flush=True)
    cpu, flags = cpu_info()
    present = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in flags.items())
    lines = [
        f"CPU: {cpu}; ISA flags: {present}; threads {args.threads}; 8 prompts, greedy, max_tokens {args.max_tokens}",
        "",
        "| engine | batch | constraint | tokens | seconds | tokens/s | valid JSON | constrained / free |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    speed = {}
    for engine, batch, constrained, tokens, seconds, ok in rows:
        speed[(engine, batch, constrained)] = tokens / seconds
    for engine, batch, constrained, tokens, seconds, ok in rows:
        tps = tokens / seconds
        ratio = f"{tps / speed[(engine, batch, False)]:.2f}" if constrained else ""
        lines.append(f"| {engine} | {batch} | {'JSON schema' if constrained else 'none'} | {tokens} | "
                     f"{seconds:.2f} | {tps:.1f} | {ok}/8 | {ratio} |")
    for batch in (1, 8):
        lines.append("")
        lines.append(f"seqit batch {batch} with the schema / llama.cpp batch 1 with the schema: "
                     f"{speed[('seqit', batch, True)] / speed[('llama.cpp', 1, True)]:.2f}x")
    table = "\n".join(lines)
    print(table)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "structured.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
