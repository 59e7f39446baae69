"""llama.cpp (through llama-cpp-python) reference for scripts/bench/generate.

Greedy, batch 1, exactly `--tokens` new tokens per prompt (EOS ignored), the GGUF's own
chat template applied. Prints one JSON line: tokens, seconds (prompt processing plus
generation, model load excluded) and the outputs.
"""

import argparse
import json
import time

from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()

    prompts = [json.loads(line) for line in open(args.prompts) if line.strip()]
    llm = Llama(
        model_path=args.model,
        n_ctx=2048,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    template = llm.metadata["tokenizer.chat_template"]
    eos = llm.detokenize([llm.token_eos()]).decode()
    bos = llm.detokenize([llm.token_bos()]).decode()
    formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    encoded = []
    for p in prompts:
        text = formatter(messages=[{"role": "user", "content": p["prompt"]}]).prompt
        encoded.append(llm.tokenize(text.encode(), add_bos=False, special=True))

    outputs, generated, seconds = [], 0, 0.0
    for tokens in encoded:
        llm.reset()  # no reuse of the previous prompt's cache
        out = []
        start = time.perf_counter()
        for token in llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            out.append(token)
            if len(out) >= args.tokens:
                break
        seconds += time.perf_counter() - start
        generated += len(out)
        outputs.append(llm.detokenize(out).decode(errors="replace"))
    print(json.dumps({
        "tokens": generated,
        "seconds": seconds,
        "prompt_tokens": sum(len(t) for t in encoded),
        "outputs": outputs,
    }))


if __name__ == "__main__":
    main()
