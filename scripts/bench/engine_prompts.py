"""Prompts of scripts/bench/engine, tokenized with the GGUF's own tokenizer (llama.cpp,
vocab only). Run as a child process so that the driver stays small: a child's peak RSS
(`ru_maxrss`) starts from the RSS of the process that spawned it.

    python engine_prompts.py --gguf MODEL --root REPO --lengths 16 512 2048 --n-seq 8 \
        [--classify prompts.jsonl]

Prints one JSON object: `tokens` maps each length N to n_seq [text, ids] pairs of exactly
N tokens (text -> ids round-trips), taken from different places of a fixed corpus (the
repo's prompt files and demo data) so that no two sequences share a prefix; `classify`
gives the token counts of the classification prompts under the GGUF's chat template and
the length of the prefix they all share.
"""

import argparse
import ctypes
import json
import statistics
import sys
from pathlib import Path

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

# llama.cpp's own log (vocab-only loads print context warnings) is dropped.
_LOG = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
llama_cpp.llama_log_set(_LOG, ctypes.c_void_p(0))


def token_prompts(vocab, root, lengths, n_seq):
    files = sorted((root / "prompts" / "seq-instruct" / "v1").glob("*.toml"))
    files += sorted((root / "examples" / "data").glob("*.jsonl"))
    corpus = "\n\n".join(f.read_text() for f in files)
    source = vocab.tokenize(corpus.encode(), add_bos=False, special=False)
    if len(source) < 64:
        sys.exit("engine_prompts: the prompt corpus is too small")

    def tokens_at(offset, count):
        return [source[(offset + i) % len(source)] for i in range(count)]

    def exact(offset, n):
        ids = tokens_at(offset, n)
        for _ in range(50):
            text = vocab.detokenize(ids).decode("utf-8", errors="ignore")
            again = vocab.tokenize(text.encode(), add_bos=False, special=False)
            if len(again) == n:
                return [text, again]
            ids = again[:n] if len(again) > n else again + tokens_at(offset + n + 7, n - len(again))
        sys.exit(f"engine_prompts: cannot make a prompt of exactly {n} tokens")

    stride = max(len(source) // max(n_seq, 1), 1)
    return {str(n): [exact(s * stride + 13 * s, n) for s in range(n_seq)] for n in lengths}


def classify_counts(vocab, prompts):
    template = vocab.metadata["tokenizer.chat_template"]
    eos = vocab.detokenize([vocab.token_eos()]).decode()
    bos = vocab.detokenize([vocab.token_bos()]).decode()
    formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    ids = [vocab.tokenize(formatter(messages=p["messages"]).prompt.encode(), add_bos=False, special=True)
           for p in prompts]
    lens = [len(i) for i in ids]
    shared = min(lens)
    for i in ids[1:]:
        shared = min(shared, next((k for k, (x, y) in enumerate(zip(ids[0], i)) if x != y), len(i)))
    return {"min": min(lens), "mean": statistics.mean(lens), "max": max(lens), "shared_prefix": shared,
            "summary": f"{min(lens)}-{max(lens)} tokens, mean {statistics.mean(lens):.0f}, chat template applied"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--lengths", type=int, nargs="*", default=[])
    ap.add_argument("--n-seq", type=int, default=8)
    ap.add_argument("--classify", help="JSONL of {id, messages} records")
    args = ap.parse_args()
    vocab = Llama(model_path=args.gguf, vocab_only=True, verbose=False)
    out = {"tokens": token_prompts(vocab, Path(args.root), args.lengths, args.n_seq) if args.lengths else {}}
    if args.classify:
        prompts = [json.loads(line) for line in open(args.classify) if line.strip()]
        out["classify"] = classify_counts(vocab, prompts)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
