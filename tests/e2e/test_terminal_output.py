"""Terminal output (issue 17): control characters from outside (memory text, server messages) print escaped;
--json stays JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness import USER, Emulators, ctl

from memsyncd.terminal import escape_controls

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m"


def test_escape_controls_keeps_newline_and_tab_only() -> None:
    """ESC, BEL, CR, DEL, C1 and bidi overrides are escaped; newline, tab and other text are kept."""
    assert escape_controls("a\x1b[31mb\x07\r\x7f\x9b\u202e\tc\nd é ═") == \
        "a\\x1b[31mb\\x07\\x0d\\x7f\\x9b\\u202e\tc\nd é ═"


def _assert_clean(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\x9b\r"), repr(text)


def test_conflict_texts_print_escaped(root: Path, emu: Emulators) -> None:
    """conflicts list / show / sync show hostile memory text escaped; --json keeps the exact text."""
    local_id = emu.local_add("esc: base", level=1)
    ctl(root, "enqueue", local_id)
    assert ctl(root, "sync").returncode == 0
    (cloud,) = [m for m in emu.cloud_memories() if m["memory"] == "esc: base"]
    emu.local_edit(local_id, f"esc: local {HOSTILE}")
    emu.cloud_edit(cloud["id"], f"esc: cloud {HOSTILE}")
    ctl(root, "enqueue", local_id)
    synced = ctl(root, "sync")
    assert synced.returncode == 0, synced.stderr
    _assert_clean(synced.stdout + synced.stderr)
    listing = ctl(root, "conflicts", "list")
    _assert_clean(listing.stdout)
    assert "\\x1b[2J" in listing.stdout
    (conflict,) = [c for c in json.loads(ctl(root, "conflicts", "list", "--json").stdout) if c["local_id"] == local_id]
    assert conflict["local"] == f"esc: local {HOSTILE}"  # JSON carries the exact text, escaped by JSON itself
    shown = ctl(root, "conflicts", "show", str(conflict["id"]))
    _assert_clean(shown.stdout)
    assert "esc: cloud \\x1b]0;owned\\x07" in shown.stdout
    status = ctl(root, "status")
    _assert_clean(status.stdout + status.stderr)


class _Hostile(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        if self.path.startswith("/v1/ping/"):
            body, status = {"status": "ok"}, 200
        else:
            body, status = {"error": f"bad request {HOSTILE}"}, 400
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def hostile_mem0() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_server_messages_print_escaped(tmp_path: Path, emu: Emulators, hostile_mem0: str) -> None:
    """A mem0 error message full of terminal escapes is shown escaped by sync; --json stays one JSON document."""
    config = {"local": {"url": emu.openmemory, "user_id": USER},
              "cloud": {"enabled": True, "url": hostile_mem0, "user_id": USER},
              "sync": {"default_level": 1, "attempts_per_run": 1}}
    path = tmp_path / ".claude/memory/config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(config))
    result = ctl(tmp_path, "--no-daemon", "sync", "--pull", XDG_RUNTIME_DIR=str(tmp_path))
    assert result.returncode != 0
    _assert_clean(result.stdout + result.stderr)
    assert "\\x1b[2J" in result.stdout + result.stderr
    as_json = ctl(tmp_path, "--no-daemon", "sync", "--pull", "--json", XDG_RUNTIME_DIR=str(tmp_path))
    json.loads(as_json.stdout)  # still one JSON document


def test_doctor_prints_server_messages_escaped(tmp_path: Path, hostile_mem0: str) -> None:
    """An OpenMemory error message full of terminal escapes is shown escaped by doctor."""
    config = {"local": {"url": hostile_mem0, "user_id": USER}, "cloud": {"enabled": False}}
    path = tmp_path / ".claude/memory/config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(config))
    result = ctl(tmp_path, "doctor", XDG_RUNTIME_DIR=str(tmp_path))
    assert "bad request" in result.stdout, result.stdout + result.stderr
    _assert_clean(result.stdout + result.stderr)
    assert "\\x1b[2J" in result.stdout
