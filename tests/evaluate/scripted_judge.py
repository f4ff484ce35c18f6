"""A scripted RAGAS judge: an OpenAI-compatible endpoint on 127.0.0.1 whose verdicts are known in advance.

This is a fake on purpose, and only for what a real judge cannot give a test: exact, known verdicts (so a
test can check that faithfulness *equals* supported claims over all claims) and faults on cue (garbage
output, HTTP errors, stalls past the timeout). Everything around it (RAGAS, instructor, the OpenAI client,
HTTP) is real. It can run in a thread of the test process or as its own process
(``python scripted_judge.py PORTFILE``), so a test can kill a ``rag eval run`` that uses it.

Which RAGAS prompt a request carries is read from the JSON-schema title in its messages. Default verdicts
are a deterministic function of the prompt text (a hash), so they are stable across runs and processes:

- ``StatementGeneratorOutput``: 1 to 4 claims;
- ``NLIStatementOutput``: one verdict per claim, 1 unless a hash bit says 0;
- ``ContextRecallOutput``: 1 to 3 classifications; ``ContextPrecisionOutput``: a verdict;
- ``AnswerRelevanceOutput``: a question (the first words of the prompt's answer) and ``noncommittal: 0``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KINDS = (
    "StatementGeneratorOutput", "NLIStatementOutput", "ContextRecallOutput", "AnswerRelevanceOutput",
    "ContextPrecisionOutput",
)


def kind_of(body: dict[str, Any]) -> str:
    text = json.dumps(body.get("messages", []))
    for kind in KINDS:
        if f'\\"title\\": \\"{kind}\\"' in text or f'"title": "{kind}"' in text:
            return kind
    return "unknown"


def _user_prompt(body: dict[str, Any]) -> str:
    return next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def _claims_in(prompt: str) -> list[str]:
    """The statements listed in an NLI prompt's input JSON (the last ``"statements": [...]``)."""
    found = re.findall(r'"statements":\s*(\[[^\]]*\])', prompt)
    for raw in reversed(found):
        try:
            items = json.loads(raw)
        except ValueError:
            continue
        if items and all(isinstance(i, str) for i in items):
            return items
    return []


def default_reply(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    prompt = _user_prompt(body)
    h = _digest(prompt)
    if kind == "StatementGeneratorOutput":
        return {"statements": [f"claim {i + 1} of prompt {h % 997}" for i in range(1 + h % 4)]}
    if kind == "NLIStatementOutput":
        claims = _claims_in(prompt) or ["a claim"]
        return {"statements": [
            {"statement": c, "reason": f"scripted reason {i + 1}", "verdict": 0 if (h >> i) & 1 and i % 2 else 1}
            for i, c in enumerate(claims)
        ]}
    if kind == "ContextRecallOutput":
        return {"classifications": [
            {"statement": f"reference statement {i + 1}", "reason": "scripted", "attributed": (h >> i) & 1}
            for i in range(1 + h % 3)
        ]}
    if kind == "AnswerRelevanceOutput":
        return {"question": f"scripted question {h % 101}?", "noncommittal": 0}
    if kind == "ContextPrecisionOutput":
        return {"reason": "scripted", "verdict": h & 1}
    return {}


class ScriptedJudge:
    """The scripted judge endpoint (see the module docstring).

    Attributes:
        replies: per kind, a function ``body -> reply object`` overriding :func:`default_reply`.
        faults: per kind, ``"garbage"`` (text that is not JSON), ``"http500"``, ``"stall"`` (sleeps
            ``stall_seconds`` before answering), or ``"length"`` (half the reply, cut off at max_tokens).
        delay: seconds every request waits before its reply (to make a run slow enough to kill).
        requests: ``(kind, body)`` of every chat request received, in order.
    """

    model = "scripted-judge"

    def __init__(self, port: int = 0) -> None:
        self.replies: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.faults: dict[str, str] = {}
        self.delay = 0.0
        self.stall_seconds = 30.0
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.on_request: Callable[[str, dict[str, Any]], None] | None = None
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": judge.model, "object": "model"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                kind = kind_of(body)
                with judge.lock:
                    judge.requests.append((kind, body))
                    if judge.on_request is not None:
                        judge.on_request(kind, body)
                time.sleep(judge.delay)
                fault = judge.faults.get(kind)
                if fault == "http500":
                    self._send(500, {"error": {"message": "scripted failure"}})
                    return
                if fault == "stall":
                    time.sleep(judge.stall_seconds)
                content = "this is not JSON at all" if fault == "garbage" else json.dumps(
                    judge.replies.get(kind, lambda b: default_reply(kind, b))(body)
                )
                finish = "stop"
                if fault == "length":
                    content, finish = content[: len(content) // 2], "length"
                self._send(200, {
                    "id": "chatcmpl-judge", "object": "chat.completion", "created": 0, "model": judge.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": finish}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def kinds(self) -> list[str]:
        with self.lock:
            return [kind for kind, _ in self.requests]

    def __enter__(self) -> ScriptedJudge:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


if __name__ == "__main__":
    # As a process: write the port to argv[1], log every request's kind and prompt hash to argv[2].
    judge = ScriptedJudge()
    judge.delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    log_path = sys.argv[2]

    def _log(kind: str, body: dict[str, Any]) -> None:
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, "prompt": hashlib.sha256(
                json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()}) + "\n")

    judge.on_request = _log
    with judge:
        with open(sys.argv[1] + ".tmp", "w") as fh:
            fh.write(str(judge.port))
        import os

        os.replace(sys.argv[1] + ".tmp", sys.argv[1])
        threading.Event().wait()
