"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1, for fault injection in tests."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted reply: HTTP ``status`` with ``body``, or a 200 SSE stream of ``pieces`` (one JSON
    ``chat.completion`` with the pieces joined when the request did not ask to stream).

    ``delay`` stalls before the response starts; ``stall_after_first`` stalls after the first piece.
    ``usage`` (``prompt_tokens``, ``completion_tokens``, ``total_tokens``) is sent in a last chunk of a
    stream that asked for it (``stream_options.include_usage``), as OpenAI does.
    """

    pieces: list[str] = field(default_factory=list)
    status: int = 200
    body: str = ""
    finish_reason: str = "stop"
    delay: float = 0.0
    stall_after_first: float = 0.0
    usage: dict[str, int] | None = None


def _sse(model: str, delta: dict[str, Any], finish_reason: str | None) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


class ScriptedEndpoint:
    """A fault injector: a fake OpenAI-compatible chat endpoint on 127.0.0.1 that replies on cue.

    A real server cannot be made to fail on cue (answer HTTP 500 once, stall past a timeout, cut a
    stream), nor to write an exact reply, so tests queue :class:`Reply` objects; each request to
    ``/v1/chat/completions`` takes the next one (the last repeats). Requests are recorded.
    """

    model = "fake-model"

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                endpoint.requests.append(json.loads(self.rfile.read(length)))
                reply = endpoint.script[min(len(endpoint.requests), len(endpoint.script)) - 1]
                time.sleep(reply.delay)
                try:
                    self._respond(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (a timeout test): nothing to report

            def _respond(self, reply: Reply) -> None:
                if reply.status != 200:
                    body = reply.body.encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if not endpoint.requests[-1].get("stream"):
                    self._complete(reply)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
                self.wfile.write(_sse(endpoint.model, {"role": "assistant", "content": ""}, None))
                for index, piece in enumerate(reply.pieces):
                    self.wfile.write(_sse(endpoint.model, {"content": piece}, None))
                    self.wfile.flush()
                    if index == 0:
                        time.sleep(reply.stall_after_first)
                self.wfile.write(_sse(endpoint.model, {}, reply.finish_reason))
                if reply.usage is not None and endpoint.requests[-1].get("stream_options", {}).get("include_usage"):
                    chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                             "model": endpoint.model, "choices": [], "usage": reply.usage}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

            def _complete(self, reply: Reply) -> None:
                """A non-streamed request gets one ``chat.completion`` object with the pieces joined."""
                body = json.dumps({
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": endpoint.model,
                    "choices": [{
                        "index": 0, "message": {"role": "assistant", "content": "".join(reply.pieces)},
                        "finish_reason": reply.finish_reason,
                    }],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True  # a stalled handler must not hold up shutdown
        self._server.block_on_close = False
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def reply(self, *replies: Reply) -> ScriptedEndpoint:
        """Queue replies for the next requests."""
        self.script.extend(replies)
        return self

    def __enter__(self) -> ScriptedEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
