"""A stand-in for vLLM's OpenAI server that answers at once: to measure the gateway's own hop
without the CPU that a real vLLM takes on the same machine. Serves one base model (`stub-base`),
accepts any adapter registration (listed in /v1/models with the folder it was loaded from as
`root`, as vLLM lists it), answers completions with one token.

    python -m benchmarks.stub_vllm PORT
    python -m benchmarks.stub_vllm --uds PATH        (vLLM's own flag: tests of the supervised socket)
"""

from __future__ import annotations

import sys

import orjson

served = {"stub-base": None}  # model name -> the folder an adapter was loaded from


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/v1/models":
        data = [
            {"id": m, "object": "model", "root": root, "parent": None if m == "stub-base" else "stub-base"}
            for m, root in served.items()
        ]
        out = orjson.dumps({"object": "list", "data": data})
    elif path == "/v1/load_lora_adapter":
        req = orjson.loads(body)
        served[req["lora_name"]] = req.get("lora_path")
        out = b"ok"
    elif path == "/health":
        out = b""
    else:
        model = orjson.loads(body)["model"]
        out = orjson.dumps(
            {
                "id": "cmpl-stub",
                "object": "text_completion",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "text": " 4", "logprobs": None, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 9, "total_tokens": 10, "completion_tokens": 1},
            }
        )
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    import uvicorn

    args = sys.argv[1:]
    where = {"uds": args[1]} if args[0] == "--uds" else {"host": "127.0.0.1", "port": int(args[-1])}
    uvicorn.run(app, **where, log_level="warning", access_log=False)
