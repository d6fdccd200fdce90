"""``memsyncctl trust [DIR]``, ``trust --list`` and ``untrust [DIR]``: the user's say over a root's config.

``trust`` shows what the config makes memsyncd do with the mem0 key and the memories (the URLs,
the scope, the default level, as the daemon would load them, environment overrides included) and
records it in the trust store (:mod:`memsyncd.store.trust`). It is an explicit command, so it records on
invocation and prints what it trusted. A running daemon watches the store and serves (or stops
serving) the root at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from memsyncd.cli.output import print_json
from memsyncd.config import Paths, Settings, load_settings
from memsyncd.errors import EXIT_OK, UsageError
from memsyncd.store.trust import list_trusted, record_trust, remove_trust, store_path


def _target(paths: Paths, args: argparse.Namespace) -> Paths:
    return Paths(Path(args.dir).expanduser().resolve()) if args.dir else paths


def effective_summary(settings: Settings) -> dict[str, Any]:
    """Where the key and the memories go under ``settings``, and in which scope."""
    cloud = settings.cloud
    return {
        "cloud_url": settings.cloud.url, "cloud_enabled": cloud.enabled,
        "local_url": settings.local.url, "local_user_id": settings.local.user_id, "local_app": settings.local.app,
        "scope": {"user_id": settings.cloud_user_id, "agent_id": cloud.agent_id, "app_id": cloud.app_id,
                  "org_id": cloud.org_id, "project_id": cloud.project_id},
        "default_level": settings.sync.default_level,
    }


def render_summary(config: Path, summary: dict[str, Any], fields: dict[str, Any]) -> str:
    scope = ", ".join(f"{k}={v}" for k, v in summary["scope"].items() if v is not None)
    level = summary["default_level"]
    meaning = "memories without a level stay local-only" if level == 0 else "memories sync unless marked level 0"
    set_here = ", ".join(sorted(fields)) or "none of them (defaults and your MEMSYNC_* environment)"
    return (f"Trusted {config}:\n"
            f"  mem0 (your key is sent here): {summary['cloud_url']}"
            f"{'' if summary['cloud_enabled'] else '  (cloud sync is off in this config)'}\n"
            f"  OpenMemory:                   {summary['local_url']} as '{summary['local_user_id']}' "
            f"(app '{summary['local_app']}')\n"
            f"  cloud scope:                  {scope}\n"
            f"  default level:                {level} ({meaning})\n"
            f"  set by the file:              {set_here}\n"
            f"Recorded in {store_path()}. Changing any of these in the file needs 'memsyncctl trust' again.\n")


def trust_command(paths: Paths, args: argparse.Namespace) -> int:
    """``trust [DIR]`` / ``trust --list`` / ``untrust [DIR]``."""
    if args.command == "untrust":
        target = _target(paths, args)
        removed = remove_trust(target.root)
        sys.stdout.write(f"{target.config}: {'no longer trusted' if removed else 'was not trusted'}.\n")
        return EXIT_OK
    if args.list:
        records = list_trusted()
        if args.json:
            print_json({"store": str(store_path()), "trusted": records})
        elif not records:
            sys.stdout.write(f"No trusted configs ({store_path()}).\n")
        else:
            sys.stdout.write(f"{len(records)} trusted config(s) in {store_path()}:\n")
            for record in records:
                sys.stdout.write(f"  {record.get('config')}  (trusted {record.get('trusted_at')})\n")
        return EXIT_OK
    target = _target(paths, args)
    if not target.config.is_file():
        raise UsageError(f"{target.root} has no {target.config.relative_to(target.root)}: there is nothing to "
                         "trust (without one, only the built-in defaults and your environment apply). "
                         "Give the project directory that holds .claude/memory/config.json.")
    settings = load_settings(target)  # a config the daemon would reject is not trusted either
    trust = record_trust(target.root)
    summary = effective_summary(settings)
    if args.json:
        print_json({"trusted": str(target.config), "root": str(target.root), "hash": trust.digest,
                    "fields": trust.fields, "effective": summary, "store": str(store_path())})
    else:
        sys.stdout.write(render_summary(target.config, summary, trust.fields))
    return EXIT_OK
