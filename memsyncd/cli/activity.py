"""``memsyncctl log [--since T] [--json]``: a root's recent changes, read from its state database.

Each line: the time, the direction (push, pull, delete, adopt, conflict, skip), the local id, the
first 60 characters of the text and why. The engine records them as it works (bounded to the
newest 10,000); a level-0 memory's text is never recorded, so it can never be shown here.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta

from memsyncd.cli.output import print_json
from memsyncd.errors import EXIT_OK, UsageError
from memsyncd.store.paths import Paths, resolve_root
from memsyncd.timestamps import format_ts, parse_ts, utc_now

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> str:
    """``--since``: an RFC 3339 time, or an age such as ``30m``, ``2h``, ``7d``; returned as RFC 3339 "Z" seconds.

    Raises:
        UsageError: neither.
    """
    found = _RELATIVE.match(text.strip().lower())
    try:
        moment = utc_now() - timedelta(**{_UNITS[found.group(2)]: int(found.group(1))}) if found else parse_ts(text)
    except (ValueError, OverflowError):
        raise UsageError(f"--since {text!r}: give a time (2026-12-05T10:00:00Z) or an age (30m, 2h, 7d).") from None
    return format_ts(moment.replace(microsecond=0))


def log_command(args: argparse.Namespace) -> int:
    """Print the root's recent changes (oldest first), or one JSON object with ``--json``."""
    paths = Paths(resolve_root(args.root))
    since = parse_since(args.since) if args.since else None
    events: list[dict[str, str | None]] = []
    if paths.state.exists():
        from memsyncd.store.state import StateStore

        store = StateStore(paths.state, verify=False)  # a damaged file raises, naming it and 'state rebuild'
        try:
            events = store.events(since, limit=args.limit)
        finally:
            store.close()
    if args.json:
        print_json({"root": str(paths.root), "since": since, "events": events})
        return EXIT_OK
    if not events:
        sys.stdout.write(f"No changes recorded{' since ' + since if since else ''} in {paths.state}.\n")
        return EXIT_OK
    for event in events:
        text = f'"{event["text"]}"' if event["text"] is not None else "-"
        sys.stdout.write(f"{event['at']}  {event['direction']:<8}  {event['local_id'] or '-'}  {text}  "
                         f"{event['why']}\n")
    return EXIT_OK
