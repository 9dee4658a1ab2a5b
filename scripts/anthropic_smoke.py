"""Conformance check with the official `anthropic` Python SDK.

Points the SDK at Modelyard's base URL and checks that the Anthropic
Messages front (`POST /v1/messages`) answers the real local model in the
shapes the SDK expects: `models.list`, `messages.create`, `messages.stream`
(the SDK accumulates the named SSE events into a message), a tool round trip
(a prior `tool_use` + `tool_result` history gets a text answer; the tiny
model may not call tools by itself), `messages.count_tokens` (equal to a
message's input tokens), and errors as SDK exceptions. With a third
argument, the model id of a provider with `messages_api = true` (the same
llama-server, which speaks Messages itself), it also checks the native
pass-through: `messages.create`, `messages.stream` and
`messages.count_tokens` answered by the upstream's own Messages API. Run by
scripts/test.sh:

    python scripts/anthropic_smoke.py http://127.0.0.1:PORT local/smollm2-135m-instruct [native/smollm2-135m-instruct]
"""

import sys

import anthropic


# Sampling fields the Messages API takes (`temperature`, `top_k`) but newer
# SDKs no longer list as arguments; Modelyard passes them on.
GREEDY = {"temperature": 0, "top_k": 1}


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def main() -> int:
    base_url, model = sys.argv[1], sys.argv[2]
    # The SDK appends /v1/messages itself; the key is ignored while the
    # server has no API keys (sent as x-api-key).
    client = anthropic.Anthropic(base_url=base_url, api_key="not-needed", max_retries=0)

    models = [m.id for m in client.models.list()]
    assert model in models, f"{model} not in /v1/models (Anthropic shape): {models}"

    # 1. messages.create
    message = client.messages.create(
        model=model,
        max_tokens=24,
        extra_body=GREEDY,
        system="You are a helpful assistant.",
        messages=[{"role": "user", "content": "Name three colors."}],
    )
    assert message.type == "message" and message.role == "assistant", message
    assert message.id.startswith("msg_"), message.id
    assert message.model == model, f"model {message.model!r} != {model!r}"
    assert text_of(message).strip(), f"empty answer: {message}"
    assert message.stop_reason in ("end_turn", "max_tokens"), message.stop_reason
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage

    # 2. messages.stream: the SDK's accumulator must rebuild the same shape.
    pieces = []
    with client.messages.stream(
        model=model,
        max_tokens=24,
        extra_body=GREEDY,
        messages=[{"role": "user", "content": "Count from one to five."}],
    ) as stream:
        for text in stream.text_stream:
            pieces.append(text)
        final = stream.get_final_message()
    streamed = "".join(pieces)
    assert len(pieces) >= 2, f"only {len(pieces)} text deltas"
    assert streamed.strip(), "empty streamed answer"
    assert text_of(final) == streamed, (text_of(final), streamed)
    assert final.model == model
    assert final.stop_reason in ("end_turn", "max_tokens"), final.stop_reason
    assert final.usage.output_tokens > 0, final.usage
    assert final.usage.input_tokens > 0, final.usage

    # 3. A tool round trip: the history of a call and its result, sent back.
    tools = [
        {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_smoke_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_smoke_1", "content": "18 degrees and sunny"},
                {"type": "text", "text": "Answer in one sentence."},
            ],
        },
    ]
    answer = client.messages.create(
        model=model, max_tokens=32, extra_body=GREEDY, tools=tools, tool_choice={"type": "none"}, messages=history
    )
    assert text_of(answer).strip(), f"no text answer after the tool result: {answer}"
    assert answer.stop_reason in ("end_turn", "max_tokens"), answer.stop_reason
    # The same history, streamed, with the tools on offer: whatever the
    # model does (text or another tool call), the SDK gets a whole message.
    with client.messages.stream(model=model, max_tokens=32, extra_body=GREEDY, tools=tools, messages=history) as stream:
        final = stream.get_final_message()
    assert final.content, f"empty streamed answer after the tool result: {final}"
    for block in final.content:
        assert block.type in ("text", "tool_use"), block
        if block.type == "tool_use":
            assert isinstance(block.input, dict), block
    assert final.stop_reason in ("end_turn", "max_tokens", "tool_use"), final.stop_reason

    # 4. messages.count_tokens: llama.cpp counts the templated prompt, the
    # same number a message's usage reports as input tokens.
    counted = client.messages.count_tokens(
        model=model,
        system="You are a helpful assistant.",
        messages=[{"role": "user", "content": "Name three colors."}],
    )
    assert counted.input_tokens == message.usage.input_tokens + (
        message.usage.cache_read_input_tokens or 0
    ), (counted, message.usage)

    # 5. Errors come back as the SDK's exceptions, in Anthropic's shape.
    try:
        client.messages.create(model="local/no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    except anthropic.NotFoundError as err:
        assert err.body["type"] == "error", err.body
        assert err.body["error"]["type"] == "not_found_error", err.body
        assert "no-such-model" in err.body["error"]["message"], err.body
    else:
        raise AssertionError("an unknown model did not raise NotFoundError")
    try:
        client.messages.create(model=model, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    except anthropic.BadRequestError as err:
        assert err.body["error"]["type"] == "invalid_request_error", err.body
    else:
        raise AssertionError("max_tokens=0 did not raise BadRequestError")

    print(f"anthropic SDK {anthropic.__version__}: ok ({model})")
    if len(sys.argv) > 3:
        check_native(client, sys.argv[3])
    return 0


def check_native(client, model: str) -> None:
    """The Messages pass-through: the upstream's own answers, `model` set to
    the id the client sent."""
    message = client.messages.create(
        model=model,
        max_tokens=24,
        extra_body=GREEDY,
        system="You are a helpful assistant.",
        messages=[{"role": "user", "content": "Name three colors."}],
    )
    assert message.type == "message" and message.role == "assistant", message
    assert message.model == model, f"model {message.model!r} != {model!r}"
    assert text_of(message).strip(), f"empty answer: {message}"
    assert message.stop_reason in ("end_turn", "max_tokens"), message.stop_reason
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage

    pieces = []
    with client.messages.stream(
        model=model,
        max_tokens=24,
        extra_body=GREEDY,
        messages=[{"role": "user", "content": "Count from one to five."}],
    ) as stream:
        for text in stream.text_stream:
            pieces.append(text)
        final = stream.get_final_message()
    streamed = "".join(pieces)
    assert len(pieces) >= 2, f"only {len(pieces)} text deltas"
    assert text_of(final) == streamed, (text_of(final), streamed)
    assert final.model == model, final.model
    assert final.usage.output_tokens > 0, final.usage

    counted = client.messages.count_tokens(
        model=model,
        system="You are a helpful assistant.",
        messages=[{"role": "user", "content": "Name three colors."}],
    )
    assert counted.input_tokens > 0, counted
    print(f"anthropic SDK {anthropic.__version__}: native pass-through ok ({model})")


if __name__ == "__main__":
    sys.exit(main())
