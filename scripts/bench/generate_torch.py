"""PyTorch / transformers reference for scripts/bench/generate.

f32 weights from a Hugging Face directory (converted from the GGUF by `seqit model
convert`), greedy, exactly `--tokens` new tokens per prompt (min_new_tokens ==
max_new_tokens), chat template applied, batches left-padded. Prints one JSON line:
tokens, seconds (generation only, model load excluded) and the outputs.
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="Hugging Face directory")
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    prompts = [json.loads(line) for line in open(args.prompts) if line.strip()]
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p["prompt"]}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]

    outputs, generated, seconds, prompt_tokens = [], 0, 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(texts), args.batch_size):
            batch = tok(texts[i : i + args.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            prompt_tokens += int(batch["attention_mask"].sum())
            start = time.perf_counter()
            out = model.generate(
                **batch,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            seconds += time.perf_counter() - start
            new = out[:, batch["input_ids"].shape[1] :]
            generated += new.numel()
            outputs.extend(tok.batch_decode(new, skip_special_tokens=False))
    print(json.dumps({"tokens": generated, "seconds": seconds, "prompt_tokens": prompt_tokens, "outputs": outputs}))


if __name__ == "__main__":
    main()
