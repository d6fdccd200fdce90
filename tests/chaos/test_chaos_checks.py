"""The chaos checkers themselves: each one must fail on the damage it exists to catch (no check that cannot fail)."""

from __future__ import annotations

import json

import pytest
from chaos_checks import (
    Private,
    assert_no_key,
    assert_no_level0_in_traffic,
    assert_no_loss_no_dup,
    assert_no_traceback,
    sha256_hex,
)

KEY = "m0-abcdefghijklmnopqrstuvwxyz012345"


def local(memory_id: str, text: str, level: int | None = 1) -> dict[str, object]:
    return {"id": memory_id, "content": text, "metadata_": {} if level is None else {"level": level},
            "state": "active"}


def cloud(cloud_id: str, text: str, local_id: str | None = None) -> dict[str, object]:
    return {"id": cloud_id, "memory": text, "metadata": {"memsync_local_id": local_id} if local_id else {}}


def test_loss_dup_checker_accepts_a_clean_sync_and_counts_it() -> None:
    checked = assert_no_loss_no_dup([local("l1", "a"), local("l2", "b", level=0), local("l3", "c")],
                                    [cloud("c1", "a", "l1"), cloud("c3", "c")], queued=["l1", "l2"], pulled=["c3"])
    assert (checked.pushed, checked.private, checked.pulled) == (1, 1, 1)


@pytest.mark.parametrize(("locals_", "clouds", "queued", "pulled", "needle"), [
    ([local("l1", "a")], [], ["l1"], [], "in the cloud 0 times"),  # lost
    ([local("l1", "a")], [cloud("c1", "a", "l1"), cloud("c2", "a", "l1")], ["l1"], [], "2 times"),  # duplicated
    ([local("l1", "a")], [cloud("c1", "a", "l1"), cloud("c2", "a")], ["l1"], [], "cloud holds 'a' 2 times"),
    ([local("l1", "a")], [cloud("c1", "stale", "l1")], ["l1"], [], "has text 'stale'"),
    ([local("l1", "a", level=0)], [cloud("c1", "a")], ["l1"], [], "level-0 memory l1 reached the cloud"),
    ([local("l1", "a", level=None)], [cloud("c1", "a", "l1")], ["l1"], [], "level-0"),  # default level 0
    ([], [cloud("c1", "x")], [], ["c1"], "is local 0 times"),  # pull lost
    ([local("l1", "x"), local("l2", "x")], [cloud("c1", "x")], [], ["c1"], "is local 2 times"),  # pull duplicated
    ([local("l1", "a")], [], ["gone"], [], "gone locally"),
])
def test_loss_dup_checker_fails_on_each_kind_of_damage(locals_: list[dict[str, object]],
                                                       clouds: list[dict[str, object]], queued: list[str],
                                                       pulled: list[str], needle: str) -> None:
    with pytest.raises(AssertionError, match=needle):
        assert_no_loss_no_dup(locals_, clouds, queued=queued, pulled=pulled)


@pytest.mark.parametrize("where", ["path", "body-text", "body-escaped", "body-hash", "query"])
def test_traffic_checker_finds_level0_text_hash_or_id(where: str) -> None:
    secret = Private("0b1c-local-id", 'private "quoted" note ✓')
    entry = {"seq": 1, "method": "POST", "path": "/v3/memories/", "query": {}, "body": "{}"}
    if where == "path":
        entry["path"] = f"/v1/memories/{secret.local_id}/"
    elif where == "body-text":
        entry["body"] = secret.text
    elif where == "body-escaped":
        entry["body"] = json.dumps({"text": secret.text})
    elif where == "body-hash":
        entry["body"] = json.dumps({"metadata": {"content_hash": sha256_hex(secret.text)}})
    else:
        entry["query"] = {"q": secret.local_id}
    assert_no_level0_in_traffic([{**entry, "body": "{}", "path": "/v1/ping/", "query": {}}], [secret])
    with pytest.raises(AssertionError, match="level-0 data reached the cloud"):
        assert_no_level0_in_traffic([entry], [secret])


def test_traceback_and_key_checkers() -> None:
    assert_no_traceback("SYNC ERROR: Network unreachable\n")
    with pytest.raises(AssertionError):
        assert_no_traceback('{"exception": "Traceback (most recent call last):\\n  File \\"x.py\\", line 1"}')
    with pytest.raises(AssertionError):
        assert_no_traceback('  File "/work/memsyncd/ctl.py", line 12, in main\n')
    assert_no_key("Token <redacted>", KEY)
    with pytest.raises(AssertionError):
        assert_no_key(f"auth: Token {KEY}", KEY)
    with pytest.raises(AssertionError):
        assert_no_key(f"key starts {KEY[:20]}…", KEY)  # a truncated echo is a leak too
    with pytest.raises(AssertionError):
        assert_no_key(KEY.encode(), KEY)
