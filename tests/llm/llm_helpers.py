"""Helpers of the LLM layer's tests (a uniquely named module: test files import it)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(__file__).parent / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def questions() -> list[str]:
    return [line for line in (DATA / "questions.txt").read_text().splitlines() if line.strip()]


def completion_payload(texts: list[str], prompt_tokens: int = 5, finish: str = "stop") -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish}
            for i, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": sum(len(t.split()) for t in texts)},
    }


class ScriptedServer:
    """OpenAI-shaped HTTP server. `plan` is a queue of actions consumed one per
    request to /v1/chat/completions: an int status (with an error body), ("sleep", s)
    to stall, or None for a normal answer echoing the last message n times."""

    def __init__(self, port: int = 0):
        self.plan: deque = deque()
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0
        self.dead = False  # kill(): kept-alive connections get no answer either
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"data": [{"id": "m"}]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if outer.dead:  # hang up without an answer, as a killed server does
                    self.close_connection = True
                    return
                with outer.lock:
                    outer.bodies.append(body)
                    action = outer.plan.popleft() if outer.plan else None
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    if outer.delay_s:
                        time.sleep(outer.delay_s)
                    if isinstance(action, tuple) and action[0] == "sleep":
                        time.sleep(action[1])
                        action = None
                    if isinstance(action, tuple) and action[0] == "retry_after":
                        self._send(429, {"error": "slow down"}, {"Retry-After": str(action[1])})
                    elif isinstance(action, int):
                        self._send(action, {"error": f"scripted {action}"})
                    else:
                        last = body["messages"][-1]["content"]
                        self._send(200, completion_payload([f"{last}#{i}" for i in range(body.get("n", 1))]))
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        # A client that timed out or a kill() leaves broken pipes: not worth a traceback.
        self.httpd.handle_error = lambda request, client_address: None
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def kill(self) -> None:
        """Stop answering at once, on open connections too, and close the port."""
        self.dead = True
        self.__exit__(None, None, None)

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
