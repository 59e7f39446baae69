"""llama.cpp (through llama-cpp-python's low-level API) side of scripts/bench/engine.

One process per configuration: the GGUF is loaded once, one small warm-up run, then
--repeat timed runs of the same job. A job is B independent sequences (their token ids
given in --tokens-file) decoded together: every sequence has its own sequence id in one
llama.cpp context (n_seq_max = B), prompts go through llama_decode in chunks of n_batch
tokens (sequences packed one after the other, as llama.cpp's own batched tools do), then
every step decodes one token per sequence in a single llama_decode call. Greedy (argmax
of the logits, computed here with numpy), EOS ignored, exactly --new-tokens new tokens.
The cache is cleared before every run.

Prints one JSON line: for each run, `first_s` (prompt processing up to the first new
token of every sequence) and `total_s` (up to the last new token), plus the first new
tokens and their text (for a sanity check between engines).
"""

import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np
import llama_cpp as L


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens-file", required=True, help="JSON list of B token-id lists (equal lengths)")
    ap.add_argument("--new-tokens", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--n-batch", type=int, default=2048, help="logical batch (llama-bench default 2048)")
    ap.add_argument("--n-ubatch", type=int, default=512, help="physical batch (llama-bench default 512)")
    args = ap.parse_args()

    prompts = json.load(open(args.tokens_file))
    n_seq = len(prompts)
    n_prompt = len(prompts[0])
    if any(len(p) != n_prompt for p in prompts):
        sys.exit("engine_llamacpp: prompts must have equal lengths")

    L.llama_backend_init()
    # Silence llama.cpp's log (it goes to stderr otherwise, a lot of it).
    log_cb = L.llama_log_callback(lambda level, text, user_data: None)
    L.llama_log_set(log_cb, ctypes.c_void_p(0))

    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(args.model.encode(), mparams)
    if not model:
        sys.exit(f"engine_llamacpp: cannot load {args.model}")
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)

    cparams = L.llama_context_default_params()
    per_seq = n_prompt + args.new_tokens + 16
    per_seq = (per_seq + 255) // 256 * 256
    # Without a unified KV cache llama.cpp gives every sequence n_ctx / n_seq_max cells.
    cparams.n_ctx = per_seq * n_seq
    cparams.n_batch = args.n_batch
    cparams.n_ubatch = args.n_ubatch
    cparams.n_seq_max = n_seq
    cparams.n_threads = args.threads
    cparams.n_threads_batch = args.threads
    ctx = L.llama_init_from_model(model, cparams)
    if not ctx:
        sys.exit("engine_llamacpp: cannot create the context")
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(max(args.n_batch, n_seq), 0, n_seq)

    def decode(items):
        """items: (token, pos, seq, wants_logits); one llama_decode call."""
        for i, (tok, pos, seq, logits) in enumerate(items):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if logits else 0
        batch.n_tokens = len(items)
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            sys.exit(f"engine_llamacpp: llama_decode returned {rc}")

    def argmax_rows(n_rows):
        ptr = L.llama_get_logits(ctx)
        rows = np.ctypeslib.as_array(ptr, shape=(n_rows, n_vocab))
        return [int(x) for x in rows.argmax(axis=1)]

    def job(seqs, new_tokens):
        L.llama_memory_clear(mem, True)
        start = time.perf_counter()
        # Prompt processing: all prompt tokens, sequence after sequence, in n_batch chunks.
        flat = [(tok, pos, s, pos == len(p) - 1) for s, p in enumerate(seqs) for pos, tok in enumerate(p)]
        last = []
        for c in range(0, len(flat), args.n_batch):
            chunk = flat[c : c + args.n_batch]
            decode(chunk)
            n_out = sum(1 for item in chunk if item[3])
            if n_out:
                last += argmax_rows(n_out)
        first = time.perf_counter() - start
        tokens = [last]
        n = len(seqs[0])
        for step in range(1, new_tokens):
            decode([(tokens[-1][s], n + step - 1, s, True) for s in range(len(seqs))])
            tokens.append(argmax_rows(len(seqs)))
        total = time.perf_counter() - start
        return first, total, tokens

    # Warm-up: the same shape of job, short (thread pool, pages, compute buffers).
    job([p[:32] for p in prompts], min(args.new_tokens, 4))
    runs, first_tokens = [], None
    for _ in range(args.repeat):
        first, total, tokens = job(prompts, args.new_tokens)
        runs.append({"first_s": first, "total_s": total})
        first_tokens = tokens[0]
    def piece(token):
        buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    first_texts = [piece(t) for t in first_tokens]
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    print(json.dumps({
        "engine": "llama.cpp",
        "llama_cpp_python": L.__version__ if hasattr(L, "__version__") else None,
        "batch": n_seq,
        "prompt_tokens": n_prompt,
        "new_tokens": args.new_tokens,
        "n_ctx": per_seq * n_seq,
        "n_batch": args.n_batch,
        "n_ubatch": args.n_ubatch,
        "runs": runs,
        "first_tokens": first_tokens,
        "first_texts": first_texts,
        "pid": os.getpid(),
    }))


if __name__ == "__main__":
    main()
