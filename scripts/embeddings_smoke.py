"""Embeddings and legacy completions through Modelyard with the official `openai` Python SDK.

Points the SDK at Modelyard's base URL and checks, against real llama-servers:
- `embeddings.create` (the SDK's default base64 encoding and `encoding_format="float"`) on a
  llama-server started with `--embeddings --pooling mean`: one vector per input, all of the
  same width, the composite model id, usage, and identical inputs giving identical vectors;
- `completions.create` (legacy, prompt-based), streamed and not, on the chat model: text, the
  composite model id, usage (the streamed usage chunk when asked for);
- errors: an unknown model is the SDK's `NotFoundError`, a missing `input` a `BadRequestError`;
- the call log records operations `embeddings` and `completions` with their usage.

Run by scripts/test.sh:

    python scripts/embeddings_smoke.py http://127.0.0.1:PORT EMBED_MODEL CHAT_MODEL
"""

import json
import math
import sys
import time
import urllib.request

import openai


def calls(base_url: str, operation: str) -> list:
    with urllib.request.urlopen(f"{base_url}/v1/calls?operation={operation}&limit=100") as r:
        return json.load(r)["data"]


def cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main() -> int:
    base_url, embed_model, chat_model = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0)

    # The SDK asks for base64 by default and decodes it.
    texts = ["The cat sat on the mat.", "A dog barked at night.", "The cat sat on the mat."]
    result = client.embeddings.create(model=embed_model, input=texts)
    assert result.model == embed_model, f"model {result.model!r} != {embed_model!r}"
    assert len(result.data) == 3, result.data
    widths = {len(d.embedding) for d in result.data}
    assert len(widths) == 1 and widths.pop() > 0, widths
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(isinstance(x, float) for x in result.data[0].embedding)
    assert result.usage.prompt_tokens > 0 and result.usage.total_tokens > 0, result.usage
    same = cosine(result.data[0].embedding, result.data[2].embedding)
    other = cosine(result.data[0].embedding, result.data[1].embedding)
    assert same > 0.999, f"identical inputs, cosine {same}"
    assert other < same, f"different inputs, cosine {other} >= {same}"

    floats = client.embeddings.create(model=embed_model, input="hello world", encoding_format="float")
    assert floats.model == embed_model
    assert len(floats.data) == 1 and len(floats.data[0].embedding) == len(result.data[0].embedding)

    completion = client.completions.create(
        model=chat_model, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert completion.model == chat_model, completion.model
    assert completion.choices[0].text, "empty legacy completion"
    assert completion.usage.completion_tokens > 0, completion.usage

    chunks, text, usage = 0, [], None
    stream = client.completions.create(
        model=chat_model,
        prompt="Once upon a time",
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        chunks += 1
        assert chunk.model == chat_model, f"chunk model {chunk.model!r}"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.text or "")
    assert chunks >= 3, f"only {chunks} chunks"
    assert "".join(text).strip(), "empty streamed legacy completion"
    assert usage is not None and usage.completion_tokens > 0, f"no usage: {usage}"

    try:
        client.embeddings.create(model="local/no-such-model", input="x")
    except openai.NotFoundError as err:
        assert "no-such-model" in str(err)
    else:
        raise AssertionError("an unknown model was not a 404")
    try:
        client.post("/embeddings", body={"model": embed_model}, cast_to=object)
    except openai.BadRequestError as err:
        assert "input" in str(err), err
    else:
        raise AssertionError("a missing input was not a 400")

    # The call log has them, with usage (records are written off the request path).
    for _ in range(50):
        embedded, completed = calls(base_url, "embeddings"), calls(base_url, "completions")
        if len(embedded) >= 2 and len(completed) >= 2:
            break
        time.sleep(0.1)
    assert len(embedded) == 2, embedded
    assert all(c["status"] == "ok" and c["usage"]["promptTokens"] > 0 for c in embedded), embedded
    assert len(completed) == 2, completed
    assert all(c["usage"]["completionTokens"] > 0 for c in completed), completed
    assert {c["stream"] for c in completed} == {True, False}, completed

    print(
        f"embeddings smoke ok: {len(result.data[0].embedding)}-dim vectors, "
        f"completion {completion.choices[0].text!r}, stream {''.join(text)!r}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
