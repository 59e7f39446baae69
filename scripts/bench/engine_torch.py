"""PyTorch / transformers (f32) side of scripts/bench/engine.

One process per configuration: the Hugging Face directory (converted from the GGUF by
`seqit model convert`) is loaded once in f32, one small warm-up run, then --repeat timed
runs. A job is B sequences of equal length (token ids from --tokens-file, so no padding
and no attention mask) run as one batch: one forward pass over the prompts (logits of
the last position only), then one forward pass per new token with the KV cache. Greedy,
EOS ignored, exactly --new-tokens new tokens.

Prints one JSON line like engine_llamacpp.py: per run `first_s` and `total_s`, and the
first new tokens and their text.
"""

import argparse
import json
import os
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="Hugging Face directory")
    ap.add_argument("--tokens-file", required=True, help="JSON list of B token-id lists (equal lengths)")
    ap.add_argument("--new-tokens", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    prompts = json.load(open(args.tokens_file))
    ids = torch.tensor(prompts, dtype=torch.long)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()

    def job(input_ids, new_tokens):
        start = time.perf_counter()
        out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1)
        first = time.perf_counter() - start
        tokens = [nxt.tolist()]
        past = out.past_key_values
        for _ in range(1, new_tokens):
            out = model(input_ids=nxt[:, None], past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1)
            tokens.append(nxt.tolist())
        total = time.perf_counter() - start
        return first, total, tokens

    runs, first_tokens = [], None
    with torch.inference_mode():
        job(ids[:, :32], min(args.new_tokens, 4))  # warm-up
        for _ in range(args.repeat):
            first, total, tokens = job(ids, args.new_tokens)
            runs.append({"first_s": first, "total_s": total})
            first_tokens = tokens[0]
    tok = AutoTokenizer.from_pretrained(args.model)
    print(json.dumps({
        "engine": "PyTorch f32",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "batch": ids.shape[0],
        "prompt_tokens": ids.shape[1],
        "new_tokens": args.new_tokens,
        "runs": runs,
        "first_tokens": first_tokens,
        "first_texts": [tok.decode([t]) for t in first_tokens],
        "pid": os.getpid(),
    }))


if __name__ == "__main__":
    main()
