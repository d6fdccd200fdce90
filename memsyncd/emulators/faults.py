"""Decide which injected fault, if any, hits an emulator request.

A :class:`FaultSpec` is what ``POST /_admin/fault`` (or ``--fault`` /
``--latency-ms`` / ``--fail-rate``) sets; it replaces the previous spec as a
whole, so ``{"fault": null}`` clears everything. The :class:`FaultInjector`
turns a spec into one :class:`Decision` per request:

* ``latency_ms`` delays every API request;
* ``fault`` (one of ``FAULT_KINDS``) hits the requests whose target or body contains ``match``
  (all when unset), ``count`` times or until cleared;
* misbehaving servers (issue 15 item 9): ``redirect`` (a 307 elsewhere), ``huge-body`` (a 200
  whose body never ends: 1 GB streamed), ``trickle`` (a 200 whose body comes one byte every
  0.2 s), and, on listing routes only (others answer normally), ``repeat-page`` (every page
  is page 1, ``next`` always set) and ``endless-next`` (``next`` never ends: past the last page
  the pages start again);
* otherwise ``fail_rate`` turns that fraction of requests into 500s, drawn
  from a seedable RNG so runs are reproducible.

The injector is thread-safe: tests change faults from their own thread while
the emulator's loop thread consults it.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["FAULT_KINDS", "LISTING_FAULTS", "Decision", "FaultInjector", "FaultSpec", "FaultSpecError"]

FAULT_KINDS: tuple[str, ...] = (
    "401", "403", "404", "422", "429", "500", "502", "503", "timeout", "reset", "malformed-200",
    "unexpected-shape-200", "400-echo", "echo", "redirect", "huge-body", "trickle", "repeat-page", "endless-next",
)
LISTING_FAULTS: frozenset[str] = frozenset({"repeat-page", "endless-next"})
_SPEC_KEYS = frozenset({"fault", "count", "match", "retry_after", "latency_ms", "fail_rate", "seed"})


class FaultSpecError(ValueError):
    """Raised when a fault specification is malformed."""


@dataclass(frozen=True)
class FaultSpec:
    """Injected-fault settings of one emulator."""

    fault: str | None = None
    count: int | None = None
    match: str | None = None
    retry_after: int = 1
    latency_ms: int = 0
    fail_rate: float = 0.0

    @classmethod
    def parse(cls, obj: Any) -> tuple[FaultSpec, int | None]:
        """Validate an admin-route body.

        Args:
            obj: decoded JSON, e.g. ``{"fault": "500", "match": "fail-me"}``.

        Returns:
            The spec and the RNG seed it asked for (``None``: keep the RNG).

        Raises:
            FaultSpecError: unknown keys or values of the wrong type or range.
        """
        if not isinstance(obj, dict):
            raise FaultSpecError("expected a JSON object")
        unknown = set(obj) - _SPEC_KEYS
        if unknown:
            raise FaultSpecError(f"unknown keys: {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}")
        fault = obj.get("fault")
        if isinstance(fault, int) and not isinstance(fault, bool):
            fault = str(fault)
        if fault is not None and fault not in FAULT_KINDS:
            raise FaultSpecError(f"fault must be null or one of {list(FAULT_KINDS)}")
        count = _opt_int(obj, "count", minimum=1)
        match = obj.get("match")
        if match is not None and (not isinstance(match, str) or not match):
            raise FaultSpecError("match must be a non-empty string or null")
        retry_after = _opt_int(obj, "retry_after", minimum=0)
        latency = obj.get("latency_ms", 0)
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
            raise FaultSpecError("latency_ms must be a number >= 0")
        fail_rate = obj.get("fail_rate", 0.0)
        if isinstance(fail_rate, bool) or not isinstance(fail_rate, (int, float)) or not 0 <= fail_rate <= 1:
            raise FaultSpecError("fail_rate must be a number between 0 and 1")
        seed = _opt_int(obj, "seed", minimum=None)
        spec = cls(
            fault=fault,
            count=count,
            match=match,
            retry_after=1 if retry_after is None else retry_after,
            latency_ms=int(latency),
            fail_rate=float(fail_rate),
        )
        return spec, seed

    def to_json(self) -> dict[str, Any]:
        """The spec as the admin route reports it."""
        return asdict(self)


def _opt_int(obj: dict[str, Any], key: str, *, minimum: int | None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise FaultSpecError(f"{key} must be an integer{bound} or null")
    return value


@dataclass(frozen=True)
class Decision:
    """What to do with one request."""

    latency_s: float = 0.0
    fault: str | None = None
    retry_after: int = 1


class FaultInjector:
    """Holds the current :class:`FaultSpec` and decides per request."""

    def __init__(self, spec: FaultSpec | None = None, *, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._spec = spec or FaultSpec()
        self._rng = random.Random(seed)

    @property
    def spec(self) -> FaultSpec:
        """The current spec; ``count`` is what remains of it."""
        with self._lock:
            return self._spec

    def set(self, spec: FaultSpec | None = None, *, seed: int | None = None, **fields: Any) -> FaultSpec:
        """Replace the spec (a given ``spec`` or one built from ``fields``) and optionally reseed.

        Raises:
            FaultSpecError: ``fields`` do not form a valid spec.
        """
        if spec is None:
            spec, body_seed = FaultSpec.parse({**fields, **({"seed": seed} if seed is not None else {})})
            seed = body_seed
        with self._lock:
            self._spec = spec
            if seed is not None:
                self._rng.seed(seed)
            return self._spec

    def clear(self) -> None:
        """Remove every fault, latency and failure rate."""
        self.set(FaultSpec())

    def decide(self, *, target: str, body: str) -> Decision:
        """Decide the fate of one request and consume one ``count`` if the fault hits.

        Args:
            target: the request target (path and query).
            body: the request body as text.
        """
        with self._lock:
            spec = self._spec
            latency = spec.latency_ms / 1000.0
            matches = spec.match is None or spec.match in target or spec.match in body
            if spec.fault is not None and matches:
                if spec.count is not None:
                    if spec.count == 1:  # the last one: the fault is used up
                        self._spec = replace(spec, fault=None, count=None, match=None)
                    else:
                        self._spec = replace(spec, count=spec.count - 1)
                return Decision(latency, spec.fault, spec.retry_after)
            if spec.fail_rate > 0 and matches and self._rng.random() < spec.fail_rate:
                return Decision(latency, "500", spec.retry_after)
            return Decision(latency, None, spec.retry_after)
