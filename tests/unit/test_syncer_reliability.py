"""The engine under failure, in-process: rejected keys, echoed secrets, pull failures, damaged state, pipelining."""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import INPROC_KEY, append_entries, emulator_settings

from memsyncd.cli.render import render_sync
from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.pipeline import WorkerPool, prefetch
from memsyncd.engine.syncer import Syncer
from memsyncd.errors import EXIT_AUTH, EXIT_PARTIAL, EXIT_UNREADABLE, AuthError, StateUnreadableError
from memsyncd.logs import register_secret
from memsyncd.models import Mapping, SyncMode, content_hash
from memsyncd.store.state import StateStore


def make_syncer(root: Path, servers: RunningEmulators, key: str = INPROC_KEY, **sync: Any) -> Syncer:
    return Syncer(emulator_settings(servers, default_level=1, **sync), Paths(root), key)


def run(syncer: Syncer, mode: SyncMode = SyncMode.FULL) -> Any:
    async def go() -> Any:
        try:
            return await syncer.run(mode)
        finally:
            await syncer.aclose()

    return asyncio.run(go())


def test_rejected_key_reaches_mem0_at_most_twice(tmp_path: Path, servers: RunningEmulators,
                                                 admin: EmulatorAdmin) -> None:
    """50 entries, concurrency 8, a wrong key: the first cloud request goes alone; exit 4; queue unchanged."""
    ids = [admin.local_add(f"rejected {i}") for i in range(50)]
    syncer = make_syncer(tmp_path, servers, key="m0-not-the-key", concurrency=8)
    append_entries(syncer.queue, ids)
    before = syncer.paths.queue.read_bytes()
    admin.clear_requests("mem0")
    report = run(syncer)
    assert report.exit_code == EXIT_AUTH and isinstance(report.fatal, AuthError)
    assert len(admin.requests("mem0")) <= 2
    assert syncer.paths.queue.read_bytes() == before


def test_key_echoed_by_a_proxy_never_reaches_messages_or_the_queue(tmp_path: Path, servers: RunningEmulators,
                                                                    admin: EmulatorAdmin,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A 502 whose body repeats 'Authorization: Token <key>': the key is redacted everywhere it could land."""
    ids = [admin.local_add(f"echo {i}") for i in range(3)]
    syncer = make_syncer(tmp_path, servers)
    append_entries(syncer.queue, ids)
    admin.fault("mem0", fault="echo")
    try:
        report = run(syncer, SyncMode.PUSH)
        assert any(r["fault"] == "echo" for r in admin.requests("mem0"))  # the proxy did echo the key
    finally:
        admin.fault("mem0", fault=None)
    assert report.exit_code == EXIT_PARTIAL and report.push.errors == 3
    rows = json.loads(syncer.paths.queue.read_text())["sync_errors"]
    assert len(rows) == 3 and all("<redacted>" in row["error"] for row in rows)
    everything = (syncer.paths.queue.read_text() + json.dumps(report.to_json()) + render_sync(report)
                  + "".join(capsys.readouterr()))
    assert INPROC_KEY not in everything and "502 Bad Gateway" in everything


def test_secret_is_redacted_before_an_error_body_is_cut_short() -> None:
    """A key straddling the 200-character cut of a text body leaves no prefix of itself behind."""
    import httpx

    from memsyncd.remote.http_edge import error_detail

    key = "m0-straddling-secret-0123456789"
    register_secret(key)
    body = "x" * 190 + key
    detail = error_detail(httpx.Response(502, text=body, headers={"content-type": "text/plain"}))
    assert "m0-strad" not in detail


@pytest.mark.parametrize(("fault", "exit_code"), [("500", EXIT_PARTIAL), ("401", EXIT_AUTH)])
def test_a_failed_pull_keeps_the_push_report(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin,
                                             fault: str, exit_code: int) -> None:
    """The listing fails after retries (or with 401): PUSH block + SYNC PARTIAL naming the error; push kept."""
    ids = [admin.local_add(f"before the pull fails {i}") for i in range(2)]
    syncer = make_syncer(tmp_path, servers)
    append_entries(syncer.queue, ids)
    admin.fault("mem0", fault=fault, match="page_size")  # only the list requests of the pull
    try:
        report = run(syncer)
    finally:
        admin.fault("mem0", fault=None)
    assert report.exit_code == exit_code
    assert report.push.created == 2 and report.pull.failed.startswith(f"mem0 returned {fault}")
    text = render_sync(report)
    assert text.startswith("PUSH: 2 memories synced to cloud\n")
    assert "SYNC PARTIAL\n" in text and f"Pull stopped early: mem0 returned {fault}" in text
    if fault == "401":
        assert "SYNC ERROR: mem0 API returned 401" in text
    data = report.to_json()
    assert data["push"]["created"] == 2 and data["pull"]["failed"] and data["exit_code"] == exit_code
    assert json.loads(syncer.paths.queue.read_text())["pending"] == []  # the push's results were applied
    assert json.loads(syncer.paths.queue.read_text())["last_sync"] is None  # not a completed full sync


def test_level_0_queue_entries_are_skipped_without_reading_the_memory(tmp_path: Path, servers: RunningEmulators,
                                                                      admin: EmulatorAdmin) -> None:
    """Lowest level wins: an entry queued as level 0 costs no local request, whatever the metadata says."""
    ids = [admin.local_add(f"private by queue {i}", level=2) for i in range(5)]
    syncer = make_syncer(tmp_path, servers)
    append_entries(syncer.queue, ids, level=0)
    admin.clear_requests("openmemory")
    admin.clear_requests("mem0")
    report = run(syncer, SyncMode.PUSH)
    assert report.push.skipped_private == 5 and report.exit_code == 0
    assert [r for r in admin.requests("openmemory") if r["path"].startswith("/api/v1/memories/")] == []
    assert admin.requests("mem0") == [] and syncer.queue.read().pending == []


def test_pull_over_several_pages_creates_each_memory_once(tmp_path: Path, servers: RunningEmulators,
                                                         admin: EmulatorAdmin) -> None:
    """250 cloud memories (3 pages) through the pipelined pull: 250 local copies, mapped, nothing twice."""
    texts = [f"paged {i:03d}" for i in range(250)]
    for text in texts:
        servers.mem0.add(text, user_id="bob", metadata={"level": 1})
    syncer = make_syncer(tmp_path, servers, concurrency=3)
    report = run(syncer, SyncMode.PULL)
    assert report.exit_code == 0 and report.pull.new == 250 and report.pull.seen == 250
    assert admin.local_texts() == sorted(texts)
    again = make_syncer(tmp_path, servers)
    assert run(again, SyncMode.PULL).pull.new == 0
    assert admin.local_texts() == sorted(texts)


def test_pulled_copy_left_unmapped_by_a_crash_is_adopted_not_duplicated(tmp_path: Path, servers: RunningEmulators,
                                                                       admin: EmulatorAdmin) -> None:
    """A local copy carrying memsync_cloud_id but no mapping (crash before the page's commit) is adopted."""
    cloud_id = admin.cloud_add("pulled before the crash")
    admin.local_add("pulled before the crash, then edited here", memsync_cloud_id=cloud_id)
    syncer = make_syncer(tmp_path, servers)
    report = run(syncer, SyncMode.PULL)
    assert report.pull.new == 0 and report.pull.adopted == 1 and report.pull.conflicts == 1
    assert admin.local_texts() == ["pulled before the crash, then edited here"]


def _damage(path: Path) -> None:
    """Overwrite every page after the first (schema and header stay readable: SQLite still opens it)."""
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 2 * page, "the DB must have pages to damage"
    data[page:] = (b"\xde\xad\xbe\xef" * (len(data) // 4 + 1))[: len(data) - page]
    path.write_bytes(bytes(data))


def test_every_state_store_call_maps_a_damaged_file_to_state_unreadable(tmp_path: Path) -> None:
    """No sqlite3.DatabaseError escapes StateStore: each becomes StateUnreadableError naming file and way out."""
    path = tmp_path / "s.db"
    store = StateStore(path)
    store.save_mappings([Mapping(f"l{i}", f"c{i}", content_hash(f"t{i}" * 50), f"t{i}" * 50) for i in range(200)])
    store.close()
    _damage(path)
    with pytest.raises(StateUnreadableError, match="state rebuild"):
        StateStore(path)  # opening verifies every page
    store = StateStore(path, verify=False)  # as if opened before the damage: each call still maps it
    calls: list[Callable[[], object]] = [
             lambda: store.get_meta("x"), lambda: store.mapping_for_local("l1"), lambda: list(store.mappings()),
             lambda: store.mappings_for_cloud(["c1"]), lambda: store.save_mapping(Mapping("a", "b", "h", "t")),
             lambda: store.record_intent("a", "h"), lambda: store.record_intents([("a", "h")]), store.conflicts,
             store.count_mappings, lambda: store.device_id]
    for call in calls:
        with pytest.raises(StateUnreadableError, match="state rebuild") as info:
            call()
        assert str(path) in info.value.message
    store.close()


def test_damaged_state_stops_the_run_and_leaves_the_queue_alone(tmp_path: Path, servers: RunningEmulators,
                                                                admin: EmulatorAdmin) -> None:
    """Exit 6, nothing sent to mem0, queue byte-identical, no 'internal error' rows."""
    first = [admin.local_add(f"synced {i} " + "x" * 400) for i in range(40)]
    syncer = make_syncer(tmp_path, servers)
    append_entries(syncer.queue, first)
    assert run(syncer, SyncMode.PUSH).exit_code == 0
    _damage(syncer.paths.state)
    later = [admin.local_add(f"queued after the damage {i}") for i in range(5)]
    with pytest.raises(StateUnreadableError, match="state rebuild"):
        make_syncer(tmp_path, servers)  # a one-shot run refuses at once, before any request
    settings = emulator_settings(servers, default_level=1)  # a daemon that opened it before the damage:
    syncer = Syncer(settings, Paths(tmp_path), INPROC_KEY, state=StateStore(syncer.paths.state, verify=False))
    append_entries(syncer.queue, later)
    before = syncer.paths.queue.read_bytes()
    admin.clear_requests("mem0")
    report = run(syncer)
    assert report.exit_code == EXIT_UNREADABLE and isinstance(report.fatal, StateUnreadableError)
    assert "memsyncctl state rebuild" in render_sync(report)
    assert syncer.paths.queue.read_bytes() == before
    assert admin.requests("mem0") == []


def test_state_store_batches(tmp_path: Path) -> None:
    """save_mappings writes all pairs in one transaction; the batch reads cover ids beyond one IN chunk."""
    store = StateStore(tmp_path / "s.db")
    store.record_intent("l5", "h")
    first = store.intent_for("l5")
    (again,) = store.record_intents([("l5", "h2")])  # its own connection: sees and keeps the first start time
    assert first is not None and again.started_at == first.started_at and again.content_hash == "h2"
    store.save_mappings([Mapping(f"l{i}", f"c{i}", "h", "t") for i in range(1200)])
    found = store.mappings_for_cloud([f"c{i}" for i in range(0, 1300, 2)])
    assert len(found) == 600 and found["c2"].local_id == "l2"
    assert store.mapped_local_ids([f"l{i}" for i in range(1190, 1210)]) == {f"l{i}" for i in range(1190, 1200)}
    assert store.count_mappings() == 1200 and store.intent_for("l5") is None  # as save_mapping does
    assert store.check() is None
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:  # committed: visible to another connection
        assert db.execute("SELECT COUNT(*) FROM mappings").fetchone()[0] == 1200


def test_worker_pool_bounds_concurrency_and_keeps_order() -> None:
    """Jobs start in submission order and never more than `size` run at once; errors land in futures."""
    async def main() -> None:
        running, peak, started = 0, 0, []

        async def job(n: int) -> int:
            nonlocal running, peak
            started.append(n)
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)
            running -= 1
            if n == 7:
                raise ValueError("seven")
            return n * 2

        async with WorkerPool(3) as pool:
            futures = [pool.submit(functools.partial(job, n)) for n in range(20)]
            results = await asyncio.gather(*futures, return_exceptions=True)
        assert peak == 3 and started == list(range(20))
        assert results[3] == 6 and isinstance(results[7], ValueError)

        async def pages() -> Any:
            for n in range(4):
                yield [n]

        assert [p async for p in prefetch(pages())] == [[0], [1], [2], [3]]

    asyncio.run(main())


def test_cloud_client_sends_one_request_with_a_rejected_key_and_bounds_the_rest() -> None:
    """20 concurrent calls, 401: one request is sent, all 20 fail with AuthError; with 200 OK at most 3 in flight."""
    import httpx

    from memsyncd.remote.cloud import CloudClient, Scope

    async def main() -> None:
        sent, in_flight, peak = 0, 0, 0
        status = 401

        async def handler(request: httpx.Request) -> httpx.Response:
            nonlocal sent, in_flight, peak
            sent += 1
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1
            return httpx.Response(status, json={"detail": "Invalid API key."} if status == 401 else {"status": "ok"})

        client = CloudClient("http://127.0.0.1:9", "m0-some-key", Scope("u"), max_in_flight=3,
                             transport=httpx.MockTransport(handler))
        client.begin_run()
        results = await asyncio.gather(*(client.ping() for _ in range(20)), return_exceptions=True)
        assert sent == 1 and all(isinstance(r, AuthError) for r in results)
        status, sent = 200, 0
        client.begin_run()
        results = await asyncio.gather(*(client.ping() for _ in range(20)), return_exceptions=True)
        assert sent == 20 and peak == 3 and all(r == {"status": "ok"} for r in results)
        await client.aclose()

    asyncio.run(main())


def test_marking_a_synced_memory_private_records_it_for_forget(tmp_path: Path, servers: RunningEmulators,
                                                               admin: EmulatorAdmin) -> None:
    """A synced memory queued again at level 0: nothing is sent, the earlier cloud copy stays, and the
    mapping remembers the level, so 'doctor' and 'forget-cloud-copies' can offer to remove that copy."""
    memory = admin.local_add("private now, synced before")
    syncer = make_syncer(tmp_path, servers)
    append_entries(syncer.queue, [memory])
    assert run(syncer, SyncMode.PUSH).exit_code == 0
    admin.clear_requests("mem0")
    syncer = make_syncer(tmp_path, servers)  # run() closed the first one
    append_entries(syncer.queue, [memory], level=0)
    report = run(syncer, SyncMode.PUSH)
    assert report.push is not None and report.push.skipped_private == 1
    assert admin.requests("mem0") == []
    mapping = StateStore(syncer.paths.state).mapping_for_local(memory)
    assert mapping is not None and mapping.level == 0
    assert admin.cloud_texts().count("private now, synced before") == 1
