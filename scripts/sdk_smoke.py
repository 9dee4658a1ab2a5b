"""Conformance check with the official `openai` Python SDK.

Points the SDK at Modelyard's base URL and checks that a streamed and a
non-streamed chat completion from the real local model come back in the
shapes the SDK expects, with the composite model id. Run by scripts/test.sh:

    python scripts/sdk_smoke.py http://127.0.0.1:PORT local/smollm2-135m-instruct
"""

import sys

import openai


def main() -> int:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0)

    models = [m.id for m in client.models.list()]
    assert model in models, f"{model} not in /v1/models: {models}"

    chunks = 0
    text = []
    usage = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name three colors."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        chunks += 1
        assert chunk.model == model, f"chunk model {chunk.model!r} != {model!r}"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
    answer = "".join(text)
    assert chunks >= 3, f"only {chunks} chunks"
    assert answer.strip(), "empty streamed answer"
    assert usage is not None and usage.completion_tokens > 0, f"no usage chunk: {usage}"

    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say OK."}],
        max_tokens=8,
        temperature=0,
    )
    assert completion.model == model
    assert completion.choices[0].message.content, "empty answer"
    assert completion.usage.total_tokens > 0

    try:
        client.chat.completions.create(model="local/no-such-model", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError as err:
        assert "no-such-model" in str(err)
    else:
        raise AssertionError("unknown model did not raise NotFoundError")

    print(f"openai {openai.__version__}: streamed {chunks} chunks ({len(answer)} chars, "
          f"{usage.completion_tokens} completion tokens), non-streamed OK, 404 OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
