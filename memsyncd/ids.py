"""What a memory id may look like; checked wherever an id enters the queue (stdlib only, for the thin client).

OpenMemory and mem0 ids are UUIDs. memsyncd does not insist on that shape (another server may use
other ids), but it refuses what no server id can be and what would break a request: an empty
string, whitespace or control characters, or anything longer than :data:`MAX_ID_LENGTH`.
"""

from __future__ import annotations

MAX_ID_LENGTH = 256


def id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a memory id, or None when it can."""
    if not isinstance(value, str) or not value.strip():
        return "the memory id is empty; give the OpenMemory id of the memory to sync"
    if len(value) > MAX_ID_LENGTH:
        return f"the memory id is {len(value)} characters long; ids are at most {MAX_ID_LENGTH}"
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return f"the memory id {value[:40]!r} contains whitespace or control characters"
    return None
