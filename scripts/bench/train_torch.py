#!/usr/bin/env python3
"""PyTorch reference for scripts/bench/train: transformers (+ PEFT for LoRA), CPU, f32
(or bf16 weights with --dtype bf16; PEFT then keeps the adapters in f32).

Same data as seqit's run: each conversation rendered with the model's chat template,
loss on the assistant tokens only (labels -100 elsewhere), truncated to --seq tokens,
batches of --batch rows, AdamW (no weight decay), gradient clipping at 1.0. Prints one
JSON line: median tokens/s over the steps after a warm-up step, and the losses.
"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--mode", choices=["lora", "full"], required=True)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    args = p.parse_args()
    torch.manual_seed(1)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=DTYPES[args.dtype])
    if args.mode == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=args.rank,
            lora_alpha=args.alpha,
            lora_dropout=args.dropout,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)

    rows = []
    for record in json.load(open(args.data)):
        user = [{"role": "user", "content": record["instruction"]}]
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": record["output"]}], tokenize=False
        )
        ids = tokenizer(full, add_special_tokens=False).input_ids[: args.seq]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
        labels = [-100] * n_prompt + ids[n_prompt:]
        rows.append((ids, labels[: len(ids)]))
    assert all(len(ids) == args.seq for ids, _ in rows), "every example fills a row"

    times, losses = [], []
    for step in range(args.steps + 1):
        batch = rows[step * args.batch : (step + 1) * args.batch]
        input_ids = torch.tensor([r[0] for r in batch])
        labels = torch.tensor([r[1] for r in batch])
        started = time.perf_counter()
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        losses.append(loss.item())
        if step > 0:
            times.append(elapsed)
    tokens = args.batch * args.seq
    print(json.dumps({
        "tokens_per_second": statistics.median(tokens / t for t in times),
        "losses": losses,
        "tokens_per_step": tokens,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
