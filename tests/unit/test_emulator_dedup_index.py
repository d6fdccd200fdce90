"""The mem0 emulator's dedup of ``infer: false`` repeats through its digest index: the same answers as a scan
of the whole store (the oldest live memory with the text in the scope), after updates, deletes and a reload."""

from __future__ import annotations

from memsyncd.emulators.mem0_store import Mem0Store

SCOPE = {"user_id": "u", "agent_id": None, "app_id": None, "run_id": None}


def repeat(store: Mem0Store, text: str) -> list[str]:
    records = store.add_messages([{"role": "user", "content": text}], dict(SCOPE), None, False)
    return [r.id for r in records]


def test_repeats_find_the_oldest_live_copy_after_updates_deletes_and_reload() -> None:
    store = Mem0Store(api_key="k")
    store.set_add_mode("immediate", dedup="existing")
    first = store.add("tea", user_id="u")["id"]
    second = store.add("coffee", user_id="u")["id"]
    assert repeat(store, "tea") == [first]
    store.update(second, text="tea")  # now two copies: the older one answers
    assert repeat(store, "tea") == [first]
    store.update(first, text="green tea")
    assert repeat(store, "tea") == [second]  # the index's stale entry for 'first' is not taken
    store.delete(second)
    created = repeat(store, "tea")
    assert created not in ([first], [second]) and len(created) == 1  # no live copy: a new memory
    assert repeat(store, "green tea") == [first]
    other_scope = store.add_messages([{"role": "user", "content": "green tea"}], {**SCOPE, "user_id": "v"},
                                     None, False)
    assert [r.id for r in other_scope] != [first]  # another user's scope never dedups against it
    reloaded = Mem0Store(api_key="k")
    reloaded.load(store.dump())
    reloaded.set_add_mode("immediate", dedup="existing")
    assert repeat(reloaded, "green tea") == [first] and repeat(reloaded, "tea") == created
    reloaded.reset()
    assert repeat(reloaded, "tea") != created
