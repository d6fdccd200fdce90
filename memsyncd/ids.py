"""What a memory id may look like, and how one goes into a request path (stdlib only, for the thin client).

OpenMemory and mem0 ids are UUIDs. memsyncd does not insist on that shape (another server may use
other ids), but it refuses what no server id can be and what would change a request's meaning: an
empty string, whitespace or control characters, anything longer than :data:`MAX_ID_LENGTH`, the
characters that delimit a URL's path, query or fragment or start an escape (``/ \\ ? # %``), and
an id made of dots only (``.`` and ``..`` are path segments no escaping can hide). Ids are checked
where they enter: the hook, ``enqueue``, the control socket, the queue file (at push time) and the
metadata the servers send. Every id is still escaped in every request path (:func:`path_segment`).
"""

from __future__ import annotations

MAX_ID_LENGTH = 256
_URL_DELIMITERS = "/\\?#%"


def id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a memory id, or None when it can."""
    if not isinstance(value, str) or not value.strip():
        return "the memory id is empty; give the OpenMemory id of the memory to sync"
    if len(value) > MAX_ID_LENGTH:
        return f"the memory id is {len(value)} characters long; ids are at most {MAX_ID_LENGTH}"
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return f"the memory id {value[:40]!r} contains whitespace or control characters"
    bad = sorted({ch for ch in value if ch in _URL_DELIMITERS})
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        return f"the memory id {value[:40]!r} contains {shown}, which no memory id has"
    if not value.strip("."):
        return f"the memory id {value!r} is only dots, which no memory id is"
    return None


def path_segment(value: str) -> str:
    """``value`` escaped as one URL path segment: every byte but ``A-Z a-z 0-9 - . _ ~`` percent-encoded.

    Dots are unreserved in URLs, so an id of dots only is escaped as ``%2E`` too: ``.`` and ``..``
    would otherwise be resolved as "this" and "the parent" path by a client, proxy or server.
    """
    from urllib.parse import quote  # here: the hook never sends a request

    escaped = quote(value, safe="")
    return escaped.replace(".", "%2E") if not escaped.strip(".") else escaped
