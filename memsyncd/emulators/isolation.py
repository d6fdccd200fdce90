"""A throw-away user environment for tests and benchmarks, so they never reach the user's daemon or files.

Everything that locates a user's memsyncd is replaced by a private directory: ``HOME``
(``~/.claude``, the ``/tmp``-less fallbacks), ``XDG_CONFIG_HOME`` (the roots registry, the key
file, systemd units), ``XDG_RUNTIME_DIR`` (the daemon's socket, pid file and pair locks; also
where ``systemctl --user`` finds its manager), and the variables that name a root, a key, a bus
or a service manager are dropped (test knobs such as
``MEMSYNC_CHAOS_FULL`` stay). The runtime directory is short (``/tmp/msiso-XXXX``): Unix
socket paths are limited to about 107 bytes.

Stdlib only.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

MARKER = "MEMSYNC_TEST_ISOLATED"
DROPPED_PREFIXES = ("MEMSYNC_ROOT", "MEMSYNC_LOCAL__", "MEMSYNC_CLOUD__", "MEMSYNC_SYNC__", "MEM0_API_KEY",
                    "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_",
                    "DBUS_SESSION_BUS_ADDRESS", "CLAUDE_CONFIG_DIR", "XDG_DATA_HOME", "XDG_STATE_HOME")


def isolated_locations(base: Path) -> dict[str, str]:
    """The variables that locate a user's memsyncd, pointed into ``base`` (directories created, 0700)."""
    home, runtime = base / "home", base / "run"
    config = home / ".config"
    for directory in (home, config, runtime):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(config), "XDG_RUNTIME_DIR": str(runtime)}


def isolate_user_environment(*, keep: bool = False) -> Path:
    """Point this process (and its children) at a private user environment; returns its directory.

    Idempotent: a second call (or a child process of an isolated one) keeps the first directory.
    The directory is removed when the process exits unless ``keep``.
    """
    existing = os.environ.get(MARKER)
    if existing and Path(existing).is_dir():
        return Path(existing)
    base = Path(tempfile.mkdtemp(prefix="msiso-", dir="/tmp" if Path("/tmp").is_dir() else None))
    for name in list(os.environ):
        if name.startswith(DROPPED_PREFIXES):
            del os.environ[name]
    os.environ.update(isolated_locations(base))
    os.environ[MARKER] = str(base)
    if not keep:
        atexit.register(shutil.rmtree, base, True)
    return base
