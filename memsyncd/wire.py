"""The control API's shared vocabulary: routes, ``Keep``, and the JSON of conflicts and errors (stdlib only).

Both ends read it: the daemon's routes (:mod:`memsyncd.daemon.control`) and every client
(:mod:`memsyncd.wire_http`, :mod:`memsyncd.cli.control_client`, the fast paths). A client never
imports the server or the engine to read a wire value. The sync and status reports carry their
own JSON (:mod:`memsyncd.engine.report`, data only, stdlib only).
"""

from __future__ import annotations

import enum

TYPE_CHECKING = False  # the fast paths read the routes: no typing, no data classes loaded for them
if TYPE_CHECKING:
    from typing import Any

    from memsyncd.errors import MemsyncError
    from memsyncd.models import Conflict

HEALTH = "/v1/health"
STATUS = "/v1/status"
SYNC = "/v1/sync"
CONFLICTS = "/v1/conflicts"
QUEUE = "/v1/queue"
PAUSE = "/v1/pause"
RESUME = "/v1/resume"
METRICS = "/v1/metrics"
ROOTS = "/v1/roots"
ROOT_ROUTES = frozenset({HEALTH, METRICS, STATUS, CONFLICTS, SYNC, QUEUE, PAUSE, RESUME})


def conflict_route(conflict_id: int) -> str:
    """``GET`` one conflict."""
    return f"{CONFLICTS}/{conflict_id}"


def resolve_route(conflict_id: int) -> str:
    """``POST`` a resolution of one conflict."""
    return f"{CONFLICTS}/{conflict_id}/resolve"


def roots_route(root: str | None = None) -> str:
    """``/v1/roots``, naming one root for ``DELETE``."""
    from urllib.parse import quote  # here, not at the top: the fast paths import this module

    return ROOTS if root is None else f"{ROOTS}?root={quote(root)}"


class Keep(enum.Enum):
    """How the user resolves a conflict."""

    LOCAL = "local"
    CLOUD = "cloud"
    BOTH = "both"
    TEXT = "text"


def conflict_to_json(conflict: Conflict) -> dict[str, Any]:
    """A conflict as the API and ``--json`` show it."""
    return {"id": conflict.id, "local_id": conflict.local_id, "cloud_id": conflict.cloud_id,
            "reason": conflict.reason, "created_at": conflict.created_at, "base": conflict.base_text,
            "local": conflict.local_text, "cloud": conflict.cloud_text}


def conflict_from_json(data: dict[str, Any]) -> Conflict:
    """Inverse of :func:`conflict_to_json`."""
    from memsyncd.models import Conflict

    return Conflict(int(data["id"]), data["local_id"], data["cloud_id"], data.get("base"), data.get("local"),
                    data.get("cloud"), data.get("reason", ""), data.get("created_at", ""))


def error_body(error: MemsyncError) -> dict[str, Any]:
    """The body of an error answer: ``{"error": {"type", "title", "message", ...}}``."""
    return {"error": error.to_dict()}
