"""Conformance check of the Responses API front with the official `openai`
Python SDK.

Points `client.responses` at Modelyard and checks, against the real local
model: `responses.create` (a stored response: a conversation turn),
`responses.stream` (the SDK accumulates the typed `response.*` events into a
`Response`), `responses.retrieve`, `previous_response_id` across three calls
keeping the context (one conversation with three turns in
`/v1/conversations`), `store=False`, a function tool round trip, and errors as
SDK exceptions. Run by scripts/test.sh:

    python scripts/responses_smoke.py http://127.0.0.1:PORT local/smollm2-135m-instruct

The tiny model does not call tools reliably: when it does not call
`get_weather` by itself, the round trip is checked on the wire instead — the
function tool is echoed, and a `store=False` request whose input holds a
`function_call` and its `function_call_output` gets a text answer.
"""

import json
import sys
import urllib.request

import openai

GREEDY = {"temperature": 0, "top_p": 1}


def get_json(url: str):
    with urllib.request.urlopen(url) as response:
        return json.load(response)


def main() -> int:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0)

    # 1. responses.create: a stored response.
    first = client.responses.create(
        model=model,
        instructions="You are a helpful assistant. Answer briefly.",
        input="My name is Ada. Say hello to me.",
        max_output_tokens=24,
        **GREEDY,
    )
    assert first.object == "response", first
    assert first.id.startswith("resp_"), first.id
    assert first.status in ("completed", "incomplete"), first.status
    assert first.model == model, (first.model, model)
    assert first.output_text.strip(), f"empty answer: {first}"
    assert first.output[0].type == "message" and first.output[0].role == "assistant"
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0, first.usage
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    assert first.usage.input_tokens_details.cached_tokens >= 0
    assert first.usage.output_tokens_details.reasoning_tokens >= 0
    assert first.instructions.startswith("You are"), first.instructions

    # 2. previous_response_id twice more: one conversation, three turns, and
    # the history reaches the model (the second and third prompts grow).
    second = client.responses.create(
        model=model,
        previous_response_id=first.id,
        input="What is my name?",
        max_output_tokens=24,
        **GREEDY,
    )
    third = client.responses.create(
        previous_response_id=second.id,
        input="Thank you.",
        max_output_tokens=16,
        **GREEDY,
    )
    assert third.status in ("completed", "incomplete"), third.status
    # The same question alone is a shorter prompt than with the history.
    alone = client.responses.create(
        model=model, input="What is my name?", store=False, max_output_tokens=1, **GREEDY
    )
    assert second.usage.input_tokens > alone.usage.input_tokens + 5, (alone.usage, second.usage)
    assert third.usage.input_tokens > second.usage.input_tokens, (second.usage, third.usage)
    conversation = first.conversation.id
    assert second.conversation.id == conversation == third.conversation.id
    conversations = get_json(f"{base_url}/v1/conversations")["data"]
    ids = [c["id"] for c in conversations]
    assert ids.count(conversation) == 1, ids
    turns = get_json(f"{base_url}/v1/conversations/{conversation}/turns")["data"]
    assert len(turns) == 3, turns
    messages = get_json(f"{base_url}/v1/conversations/{conversation}/messages")["data"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3, messages

    # 3. responses.retrieve reads a stored response back.
    again = client.responses.retrieve(second.id)
    assert again.id == second.id and again.output_text == second.output_text, again

    # 4. responses.stream: the SDK rebuilds the response from the events.
    # An answer cut at max_output_tokens ends with `response.incomplete`
    # (as OpenAI's does), which the SDK's get_final_response() does not take.
    deltas = []
    kinds = []
    last = None
    with client.responses.stream(
        model=model,
        input="Count from one to five.",
        max_output_tokens=64,
        **GREEDY,
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            last = event
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response() if last.type == "response.completed" else last.response
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds[:4]
    assert kinds[-1] in ("response.completed", "response.incomplete"), kinds[-3:]
    assert len(deltas) >= 2, f"only {len(deltas)} text deltas"
    assert final.output_text == "".join(deltas), (final.output_text, deltas)
    assert final.usage.output_tokens > 0, final.usage

    # 5. store=False: stateless, not readable afterwards.
    stateless = client.responses.create(
        model=model, input="Name a color.", store=False, max_output_tokens=12, **GREEDY
    )
    assert stateless.store is False and stateless.output_text.strip(), stateless
    try:
        client.responses.retrieve(stateless.id)
        raise AssertionError("a store=False response was readable")
    except openai.NotFoundError as err:
        assert err.status_code == 404

    # 6. A function tool round trip.
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    asked = client.responses.create(
        model=model,
        input="What is the weather in Paris? Use the get_weather tool.",
        tools=tools,
        tool_choice="auto",
        max_output_tokens=48,
        **GREEDY,
    )
    assert asked.tools[0].name == "get_weather", asked.tools
    calls = [item for item in asked.output if item.type == "function_call"]
    if calls:
        print(f"model called {calls[0].name}({calls[0].arguments})")
        answered = client.responses.create(
            model=model,
            previous_response_id=asked.id,
            tools=tools,
            input=[
                {"type": "function_call_output", "call_id": c.call_id, "output": "sunny, 21 C"}
                for c in calls
            ],
            max_output_tokens=32,
            **GREEDY,
        )
        assert answered.id != asked.id and answered.status in ("completed", "incomplete")
    else:
        print("the model did not call the tool; checking the round trip on the wire")
    # The history of a call and its output gets a text answer.
    answered = client.responses.create(
        model=model,
        store=False,
        tools=tools,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": json.dumps({"city": "Paris"})},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"},
        ],
        max_output_tokens=32,
        **GREEDY,
    )
    assert answered.output_text.strip() or any(
        item.type == "function_call" for item in answered.output
    ), answered

    # 7. Errors are SDK exceptions with OpenAI's envelope.
    try:
        client.responses.create(model=model, input="x", previous_response_id="resp_unknown")
        raise AssertionError("an unknown previous_response_id was accepted")
    except openai.NotFoundError as err:
        assert err.status_code == 404 and err.code == "response_not_found", err.body
    try:
        client.responses.create(model=model, input=[{"type": "computer_call"}])
        raise AssertionError("a malformed input was accepted")
    except openai.BadRequestError as err:
        assert err.status_code == 400 and err.param == "input", err.body

    print(f"responses smoke ok: {first.output_text!r} / {third.output_text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
