"""The chaos suite's shared checks: nothing lost, nothing duplicated, no level-0 byte in cloud traffic,
no traceback, no key — plus the scenario helpers (seeded memories, a cloud-traffic watch, an output
transcript) that every chaos test uses to gather what those checks look at.

The checks read the emulators' admin routes (``/_admin/state``, ``/_admin/requests``) and the files
under a root; they never trust memsyncd's own account of what it did.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from harness import API_KEY, DaemonProc, Emulators, ctl, start_daemon, wait_for

FULL = os.environ.get("MEMSYNC_CHAOS_FULL", "") not in ("", "0")
"""``MEMSYNC_CHAOS_FULL=1``: the long variants (30 push kills over 1,000 memories, 10 pull kills, 50 MB queue…)."""

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \"[^\"]+\", line \d+", re.MULTILINE)
KEY_WINDOW = 16  # any 16 characters of the key in a row count as a leak (a truncated echo is still a leak)


def sha256_hex(text: str) -> str:
    """SPEC 4's content hash."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- what the two stores hold -----------------------------------------------------------------


def local_memories(emu: Emulators) -> list[dict[str, Any]]:
    """Every live local memory (OpenMemory's admin dump: ``id``, ``content``, ``metadata_``, ``state``)."""
    r = emu.http.get(f"{emu.openmemory}/_admin/state")
    r.raise_for_status()
    return [m for m in r.json()["memories"] if m.get("state") == "active"]


def cloud_memories(emu: Emulators) -> list[dict[str, Any]]:
    """Every live cloud memory (mem0's admin dump: ``id``, ``memory``, ``metadata``)."""
    return emu.cloud_memories()


def _level(memory: dict[str, Any]) -> int | None:
    level = (memory.get("metadata_") or {}).get("level")
    return level if isinstance(level, int) and not isinstance(level, bool) else None


@dataclass
class Checked:
    """What :func:`assert_no_loss_no_dup` verified, for the figures in docs/chaos.md."""

    pushed: int = 0
    pulled: int = 0
    private: int = 0


def assert_no_loss_no_dup(local: Sequence[dict[str, Any]], cloud: Sequence[dict[str, Any]], *,
                          queued: Iterable[str], pulled: Iterable[str] = (), default_level: int = 0) -> Checked:
    """Nothing lost, nothing duplicated.

    Args:
        local: :func:`local_memories` (live only).
        cloud: :func:`cloud_memories` (live only).
        queued: local ids that were queued for push; those whose effective level is ≥ 1 must be in the
            cloud exactly once (by ``memsync_local_id`` metadata and by content), level-0 ones never.
        pulled: cloud ids that were created in the cloud; each must be a live local memory exactly once.
        default_level: the root's ``sync.default_level`` (level of a memory without one).

    Raises:
        AssertionError: naming every lost, duplicated or leaked memory.
    """
    problems: list[str] = []
    by_local = {m["id"]: m for m in local}
    cloud_by_local_id: dict[str, list[dict[str, Any]]] = {}
    for memory in cloud:
        owner = (memory.get("metadata") or {}).get("memsync_local_id")
        if isinstance(owner, str):
            cloud_by_local_id.setdefault(owner, []).append(memory)
    checked = Checked()
    for local_id in dict.fromkeys(queued):
        found = by_local.get(local_id)
        if found is None:
            problems.append(f"queued local memory {local_id} is gone locally")
            continue
        memory = found
        level = _level(memory)
        level = default_level if level is None else level
        copies = cloud_by_local_id.get(local_id, [])
        same_text = [c for c in cloud if c["memory"] == memory["content"]]
        if level == 0:
            checked.private += 1
            if copies or same_text:
                problems.append(f"level-0 memory {local_id} reached the cloud ({len(copies) + len(same_text)} copies)")
            continue
        checked.pushed += 1
        if len(copies) != 1:
            problems.append(f"local {local_id} ({memory['content']!r}) is in the cloud {len(copies)} times")
        elif copies[0]["memory"] != memory["content"]:
            problems.append(f"cloud copy of {local_id} has text {copies[0]['memory']!r}, local {memory['content']!r}")
        if len(same_text) != 1:
            problems.append(f"text {memory['content']!r} is in the cloud {len(same_text)} times")
    for text, count in Counter(c["memory"] for c in cloud).items():
        if count > 1:
            problems.append(f"cloud holds {text!r} {count} times")
    for owner, copies in cloud_by_local_id.items():
        if len(copies) > 1:
            problems.append(f"cloud holds {len(copies)} memories for memsync_local_id {owner}")
    cloud_by_id = {c["id"]: c for c in cloud}
    local_texts = Counter(m["content"] for m in local)
    for cloud_id in dict.fromkeys(pulled):
        origin = cloud_by_id.get(cloud_id)
        if origin is None:
            problems.append(f"pulled cloud memory {cloud_id} is gone from the cloud")
            continue
        checked.pulled += 1
        if local_texts[origin["memory"]] != 1:
            problems.append(f"cloud memory {cloud_id} ({origin['memory']!r}) is local {local_texts[origin['memory']]} "
                            "times")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
    return checked


# --- cloud traffic ------------------------------------------------------------------------------


@dataclass
class TrafficWatch:
    """Reads the mem0 emulator's request log incrementally (by ``seq``), so none of it is missed.

    :meth:`collect` must run often enough that the emulator's bounded log never evicts an entry not read
    yet; a gap in the numbers fails the test rather than passing it on partial evidence.
    """

    emu: Emulators
    service: str = "mem0"
    seen: int = -1
    entries: list[dict[str, Any]] = field(default_factory=list)

    _empty_at_start: bool = False

    def __post_init__(self) -> None:
        if self.seen < 0:  # start after whatever is logged now
            existing = self.emu.requests(self.service)
            self.seen = existing[-1]["seq"] if existing else 0
            # an empty (e.g. just cleared) log keeps counting: its next entry, whatever its seq, is our first
            self._empty_at_start = not existing

    def collect(self) -> list[dict[str, Any]]:
        """Read the entries logged since the last call; return all read so far."""
        new = self.emu.requests(self.service, since=self.seen)
        if new and self._empty_at_start:
            self.seen, self._empty_at_start = new[0]["seq"] - 1, False
        if new:
            assert new[0]["seq"] == self.seen + 1, (
                f"the {self.service} request log evicted entries {self.seen + 1}..{new[0]['seq'] - 1} before "
                "they were read: collect more often")
            self.seen = new[-1]["seq"]
            self.entries += new
        return self.entries


@dataclass(frozen=True)
class Private:
    """A level-0 memory: none of these three strings may appear in cloud traffic."""

    local_id: str
    text: str

    def needles(self) -> list[str]:
        escaped = json.dumps(self.text, ensure_ascii=True)[1:-1]
        return list(dict.fromkeys([self.local_id, self.text, escaped, sha256_hex(self.text)]))


def assert_no_level0_in_traffic(requests: Sequence[dict[str, Any]], private: Iterable[Private]) -> int:
    """No level-0 text, content hash or local id in any request's path, query or body.

    Returns:
        The number of requests checked.
    """
    needles = [(p, n) for p in private for n in p.needles()]
    leaks: list[str] = []
    for entry in requests:
        blob = " ".join([entry["method"], entry["path"], json.dumps(entry.get("query", {})), entry.get("body", "")])
        for memory, needle in needles:
            if needle in blob:
                leaks.append(f"{entry['method']} {entry['path']} (seq {entry.get('seq')}) carries {needle!r} "
                             f"of level-0 memory {memory.local_id}")
    assert not leaks, "level-0 data reached the cloud:\n" + "\n".join(leaks[:20])
    return len(requests)


# --- outputs and files ---------------------------------------------------------------------------


def assert_no_traceback(text: str, where: str = "output") -> None:
    """A user never sees a Python traceback (nor does the journal)."""
    match = TRACEBACK.search(text)
    assert match is None, f"traceback in {where}:\n{text[max(0, match.start() - 400):match.start() + 1600]}"


def key_fragments(key: str) -> list[str]:
    """The key and every run of :data:`KEY_WINDOW` of its characters."""
    if len(key) <= KEY_WINDOW:
        return [key]
    return [key[i:i + KEY_WINDOW] for i in range(len(key) - KEY_WINDOW + 1)]


def assert_no_key(text: str | bytes, key: str, where: str = "output") -> None:
    """The mem0 key (or any 16-character piece of it) never appears."""
    blob = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
    found = [piece for piece in key_fragments(key) if piece in blob]
    assert not found, f"the API key appears in {where} (e.g. {found[0][:4]}…)"


def scan_root(root: Path, key: str) -> int:
    """Every file under ``root`` (logs, captured outputs, sync-queue.json, the state DB and its WAL):
    no key anywhere, no traceback in any text. Returns the number of files scanned."""
    scanned = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.suffix == ".sock":
            continue
        data = path.read_bytes()
        assert_no_key(data, key, str(path))
        assert_no_traceback(data.decode("utf-8", errors="replace"), str(path))
        scanned += 1
    return scanned


@dataclass
class Transcript:
    """Everything a scenario's commands printed, checked together at the end."""

    outputs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
        self.outputs.append((f"{what} stdout", result.stdout or ""))
        self.outputs.append((f"{what} stderr", result.stderr or ""))
        return result

    def add_text(self, what: str, text: str) -> None:
        self.outputs.append((what, text))

    def check(self, key: str) -> int:
        """No traceback and no key in anything recorded; returns how many outputs were checked."""
        for what, text in self.outputs:
            assert_no_traceback(text, what)
            assert_no_key(text, key, what)
        return len(self.outputs)


# --- seeded scenarios ------------------------------------------------------------------------------


@dataclass
class Seeded:
    """Local memories made for a scenario: the ids to queue, and the level-0 ones among them."""

    queued: list[str] = field(default_factory=list)
    private: list[Private] = field(default_factory=list)


def seed_local(emu: Emulators, prefix: str, count: int, *, private_every: int = 10) -> Seeded:
    """``count`` local memories of level 1 or 2, plus one level-0 memory per ``private_every`` of them."""
    seeded = Seeded()
    for i in range(count):
        seeded.queued.append(emu.local_add(f"{prefix} {i:05d}", level=1 + i % 2))
        if private_every and i % private_every == 0:
            text = f"{prefix} PRIVATE {i:05d} secret-{sha256_hex(prefix + str(i))[:12]}"
            local_id = emu.local_add(text, level=0)
            seeded.queued.append(local_id)
            seeded.private.append(Private(local_id, text))
    return seeded


def count_cloud(emu: Emulators, prefix: str) -> int:
    """How many live cloud memories start with ``prefix``."""
    return sum(1 for m in emu.cloud_memories() if m["memory"].startswith(prefix))


def count_local(emu: Emulators, prefix: str) -> int:
    """How many live local memories start with ``prefix``."""
    return sum(1 for m in local_memories(emu) if m["content"].startswith(prefix))


def with_prefix(memories: Sequence[dict[str, Any]], prefix: str, text_key: str) -> list[dict[str, Any]]:
    """The memories of one scenario."""
    return [m for m in memories if str(m[text_key]).startswith(prefix)]


# --- running memsyncctl ---------------------------------------------------------------------------


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    stripped = {k: v for k, v in os.environ.items()
                if k.startswith("MEMSYNC_") and k != "MEMSYNC_TRUSTED_ROOTS"}  # the suite's trust of its tmp roots
    for k in stripped:
        del os.environ[k]
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.environ.update(stripped)


def one_shot(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``memsyncctl --no-daemon ARGS``: in-process (default) or a subprocess (``MEMSYNC_CHAOS_FULL``)."""
    argv = ["--root", str(root), "--no-daemon", *args]
    if FULL:
        return ctl(root, "--no-daemon", *args)
    from memsyncd.ctl import main

    out, err = io.StringIO(), io.StringIO()
    with _env(MEM0_API_KEY=API_KEY, MEM0_TELEMETRY="false"), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            code: Any = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:  # noqa: BLE001 - a subprocess would have printed this traceback
            err.write(traceback.format_exc())
            code = 70
    structlog.reset_defaults()
    return subprocess.CompletedProcess(argv, int(code or 0), out.getvalue(), err.getvalue())


def human_text(result: subprocess.CompletedProcess[str]) -> str:
    """What a person reads: stdout and the stderr lines that are not JSON log records."""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    return result.stdout + "\n".join(lines)


# --- the daemon ------------------------------------------------------------------------------------


def start_served(root: Path, **kwargs: Any) -> DaemonProc:
    """``memsyncd run`` for ``root``, returned once the root itself is served (health carries its part)."""
    daemon = start_daemon(root, **kwargs)
    try:
        wait_for(lambda: "busy" in (daemon.health() or {}), timeout=30)
    except AssertionError:
        daemon.stop(signal.SIGKILL)
        raise
    return daemon


@contextlib.contextmanager
def running_served(root: Path, **kwargs: Any) -> Iterator[DaemonProc]:
    """:func:`start_served` that always stops the daemon."""
    daemon = start_served(root, **kwargs)
    try:
        yield daemon
    finally:
        daemon.stop()
