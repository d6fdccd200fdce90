"""A small HTTP client for driving the emulators the way a user (or a test) would: both APIs plus /_admin."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str = "condition",
               interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it.

    Raises:
        TimeoutError: naming ``what`` when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for: {what}")
        time.sleep(interval)


@dataclass
class EmulatorAdmin:
    """Acts on the OpenMemory and mem0 emulators over HTTP (loopback only)."""

    openmemory: str
    mem0: str
    api_key: str
    user: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def close(self) -> None:
        """Close connections."""
        self.http.close()

    # --- OpenMemory (no auth) ---------------------------------------------------------------

    def local_add(self, text: str, level: int | None = None, **meta: Any) -> str:
        """Create a local memory verbatim; returns its id."""
        metadata = dict(meta)
        if level is not None:
            metadata["level"] = level
        r = self.http.post(f"{self.openmemory}/api/v1/memories/",
                           json={"user_id": self.user, "text": text, "metadata": metadata, "infer": False,
                                 "app": "claude"})
        r.raise_for_status()
        return str(r.json()["id"])

    def local_get(self, memory_id: str) -> dict[str, Any]:
        """One local memory (``text``, ``state``, ``metadata_``)."""
        r = self.http.get(f"{self.openmemory}/api/v1/memories/{memory_id}")
        r.raise_for_status()
        return dict(r.json())

    def local_edit(self, memory_id: str, text: str) -> None:
        """Replace a local memory's text."""
        self.http.put(f"{self.openmemory}/api/v1/memories/{memory_id}",
                      json={"memory_content": text, "user_id": self.user}).raise_for_status()

    def local_delete(self, memory_id: str) -> None:
        """Soft-delete a local memory."""
        self.http.request("DELETE", f"{self.openmemory}/api/v1/memories/",
                          json={"memory_ids": [memory_id], "user_id": self.user}).raise_for_status()

    def local_texts(self) -> list[str]:
        """Sorted texts of all live local memories."""
        texts: list[str] = []
        page = 1
        while True:
            r = self.http.post(f"{self.openmemory}/api/v1/memories/filter",
                               json={"user_id": self.user, "page": page, "size": 100})
            r.raise_for_status()
            body = r.json()
            texts += [item["content"] for item in body["items"]]
            if page >= body.get("pages", 1):
                return sorted(texts)
            page += 1

    def local_agent_texts(self, query: str | None = None) -> list[str]:
        """Sorted texts an MCP client (Claude Code) reads: the vector store's ``data``, not SQL."""
        params = {"user_id": self.user, **({"query": query} if query is not None else {})}
        r = self.http.get(f"{self.openmemory}/_admin/mcp/memories", params=params)
        r.raise_for_status()
        return sorted(str(item["memory"]) for item in r.json()["results"])

    # --- mem0 (with the key) ----------------------------------------------------------------

    @property
    def auth(self) -> dict[str, str]:
        """The platform's auth header."""
        return {"Authorization": f"Token {self.api_key}"}

    def cloud_add(self, text: str, **metadata: Any) -> str:
        """Create a cloud memory verbatim; returns its id (immediate add mode) or its event id (queued)."""
        r = self.http.post(f"{self.mem0}/v3/memories/add/", headers=self.auth,
                           json={"messages": [{"role": "user", "content": text}], "user_id": self.user,
                                 "infer": False, "metadata": metadata})
        r.raise_for_status()
        first = r.json()["results"][0]
        return str(first.get("id") or first["event_id"])

    def cloud_edit(self, memory_id: str, text: str) -> None:
        """Replace a cloud memory's text."""
        self.http.put(f"{self.mem0}/v1/memories/{memory_id}/", headers=self.auth,
                      json={"text": text}).raise_for_status()

    def cloud_delete(self, memory_id: str) -> None:
        """Delete a cloud memory."""
        self.http.delete(f"{self.mem0}/v1/memories/{memory_id}/", headers=self.auth).raise_for_status()

    def cloud_memories(self) -> list[dict[str, Any]]:
        """Live cloud memories, from the admin state dump."""
        r = self.http.get(f"{self.mem0}/_admin/state")
        r.raise_for_status()
        return [m for m in r.json()["memories"] if not m.get("deleted")]

    def cloud_events_settled(self) -> bool:
        """True when no queued add is still pending or processing."""
        r = self.http.get(f"{self.mem0}/_admin/state")
        r.raise_for_status()
        return all(e.get("status") not in ("PENDING", "PROCESSING") for e in r.json().get("events", []))

    def cloud_texts(self) -> list[str]:
        """Sorted texts of all live cloud memories."""
        return sorted(m["memory"] for m in self.cloud_memories())

    # --- /_admin ----------------------------------------------------------------------------

    def _base(self, service: str) -> str:
        return self.mem0 if service == "mem0" else self.openmemory

    def requests(self, service: str = "mem0", since: int = 0) -> list[dict[str, Any]]:
        """The emulator's request log (entries after request number ``since``)."""
        r = self.http.get(f"{self._base(service)}/_admin/requests", params={"since": since} if since else None)
        r.raise_for_status()
        body = r.json()
        return list(body["requests"] if isinstance(body, dict) else body)

    def clear_requests(self, service: str = "mem0") -> None:
        """Empty the request log."""
        self.http.delete(f"{self._base(service)}/_admin/requests").raise_for_status()

    def fault(self, service: str = "mem0", **spec: Any) -> None:
        """Set (or with ``fault=None`` clear) a fault."""
        self.http.post(f"{self._base(service)}/_admin/fault", json=spec).raise_for_status()

    def add_mode(self, mode: str, delay_ms: int = 50) -> None:
        """Switch mem0 between immediate and queued adds."""
        self.http.post(f"{self.mem0}/_admin/add_mode", json={"mode": mode, "delay_ms": delay_ms}).raise_for_status()
