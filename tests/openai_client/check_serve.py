"""`seqit serve` as the official OpenAI Python client sees it.

Run by scripts/test-openai-client: starts the given seqit binary's server on a free
loopback port with the embedded default model, then checks structured outputs
(`response_format` json_schema, vLLM's `guided_choice` through `extra_body`),
`logprobs` / `top_logprobs`, and streaming with log-probabilities, as parsed by the
`openai` package itself. Exits non-zero with a message on the first failure.
"""

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import openai

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "country": {"type": "string", "maxLength": 30},
    },
    "required": ["city", "country"],
    "additionalProperties": False,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen) -> None:
    for _ in range(600):
        if server.poll() is not None:
            sys.exit(f"seqit serve exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit("seqit serve did not become ready within 60 s")


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def main() -> None:
    binary = sys.argv[1]
    port = free_port()
    server = subprocess.Popen(
        [binary, "serve", "--port", str(port), "--served-model-name", "smol"],
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, server)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        question = [{"role": "user", "content": "Name a city and its country as JSON."}]

        reply = client.chat.completions.create(
            model="smol",
            messages=question,
            max_tokens=60,
            temperature=0,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "place", "schema": SCHEMA, "strict": True},
            },
        )
        content = reply.choices[0].message.content
        value = json.loads(content)
        check(
            set(value) == {"city", "country"} and all(isinstance(v, str) for v in value.values()),
            f"response_format json_schema gives schema-valid JSON: {content}",
        )

        reply = client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "Is water wet?"}],
            max_tokens=5,
            temperature=0,
            extra_body={"guided_choice": ["yes", "no"]},
            logprobs=True,
            top_logprobs=3,
        )
        choice = reply.choices[0]
        check(choice.message.content in ("yes", "no"), f"guided_choice: {choice.message.content!r}")
        tokens = choice.logprobs.content
        check(
            "".join(t.token for t in tokens) == choice.message.content,
            "logprobs tokens spell the reply",
        )
        check(
            all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in tokens),
            "top_logprobs has 3 alternatives per token, log-probabilities <= 0",
        )

        stream = client.chat.completions.create(
            model="smol",
            messages=question,
            max_tokens=60,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            logprobs=True,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "place", "schema": SCHEMA},
            },
        )
        text, streamed_tokens, usage = "", [], None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                if c.logprobs is not None and c.logprobs.content:
                    streamed_tokens.extend(c.logprobs.content)
        check(text == content, "the streamed reply equals the non-streamed one")
        check(
            "".join(t.token for t in streamed_tokens) == text,
            "streamed logprobs spell the streamed reply",
        )
        check(usage is not None and usage.completion_tokens >= len(streamed_tokens), "usage arrives at the end")

        try:
            client.chat.completions.create(
                model="smol",
                messages=question,
                max_tokens=5,
                extra_body={"guided_regex": "(unclosed"},
            )
            check(False, "an invalid regex is refused")
        except openai.BadRequestError as error:
            check(error.body.get("param") == "guided_regex", f"400 names the field: {error.body}")

        completion = client.completions.create(
            model="smol", prompt="One, two, three,", max_tokens=4, temperature=0, logprobs=2
        )
        lp = completion.choices[0].logprobs
        check(
            len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) and lp.text_offset[0] == 0,
            "legacy completions logprobs",
        )
        check(re.fullmatch(r".+", completion.choices[0].text or "x") is not None, "completion text")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
