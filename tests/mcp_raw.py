"""``msearch mcp`` as a subprocess spoken to line by line, for tests that
send what no well-behaved client sends (malformed frames, wrong types).
Not a test module."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


class RawServer:
    """``python tests/fake_cli.py mcp ARGS`` (the fake embedder), initialized."""

    def __init__(self, *args: str, cwd: Path | None = None, embed_delay: float = 0) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE.parent)}
        env["FAKE_EMBED_DELAY"] = str(embed_delay)
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fake_cli.py"), "mcp", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
        self._buf = b""
        self._id = 100
        answer = self.request_raw(INITIALIZE)
        assert "result" in answer, answer
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send_line(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.rstrip(b"\n") + b"\n")
        self.proc.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_line(json.dumps(message).encode())

    def recv(self, timeout: float = 60) -> Any:
        """The next message from the server (fails after ``timeout`` s)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("the server did not answer")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError(f"the server ended: {self.stderr()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def request_raw(self, message: Any) -> Any:
        self.send(message)
        return self.recv()

    def call(self, tool: str, arguments: Any) -> Any:
        self._id += 1
        return self.request_raw(
            {
                "jsonrpc": "2.0",
                "id": self._id,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments},
            }
        )

    def alive(self) -> bool:
        """Still serving: a search answers."""
        answer = self.call("search", {"query": "bread", "mode": "lexical"})
        return "result" in answer and not answer["result"].get("isError")

    def close(self, timeout: float = 60) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout)
        return code

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
