"""Reference client for scripts/bench/client: the Python `openai` AsyncOpenAI client
doing the same job as `seqit generate --endpoint` (every prompt of a JSONL file sent as
a chat completion with bounded concurrency, replies written as JSONL).

    python client_openai.py BASE_URL MODEL INPUT OUTPUT CONCURRENCY MAX_TOKENS
"""

import asyncio
import json
import sys

from openai import AsyncOpenAI


async def main(base_url, model, input_path, output_path, concurrency, max_tokens):
    with open(input_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=8, timeout=300)
    gate = asyncio.Semaphore(concurrency)

    async def ask(record):
        async with gate:
            response = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": record["prompt"]}],
                max_tokens=max_tokens,
                temperature=0.0,
                top_p=1.0,
                seed=0,
            )
        choice = response.choices[0]
        return {
            "id": record["id"],
            "output": choice.message.content,
            "finish_reason": choice.finish_reason,
            "prompt_tokens": response.usage.prompt_tokens if response.usage else None,
            "completion_tokens": response.usage.completion_tokens if response.usage else None,
        }

    results = await asyncio.gather(*(ask(r) for r in records))
    with open(output_path, "w") as f:
        for result in results:
            f.write(json.dumps(result) + "\n")
    await client.close()


if __name__ == "__main__":
    base_url, model, input_path, output_path, concurrency, max_tokens = sys.argv[1:7]
    asyncio.run(main(base_url, model, input_path, output_path, int(concurrency), int(max_tokens)))
