"""``memsyncd``: the daemon's entry point (``run``), the emulators (``emulate``) and the ``demo``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from memsyncd import __version__
from memsyncd.errors import EXIT_USAGE, MemsyncError

USAGE = """\
memsyncd {run,emulate,demo} ...

  run       run the sync daemon: every registered root, or one with --root (see 'memsyncd run --help')
  emulate   serve loopback emulators of OpenMemory and mem0 (tests, trying it out)
  demo      a self-contained walk-through on the emulators (no accounts, no network)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``memsyncd``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if args else EXIT_USAGE
    if args[0] == "--version":
        sys.stdout.write(f"memsyncd {__version__}\n")
        return 0
    command, rest = args[0], args[1:]
    try:
        if command == "emulate":
            from memsyncd.emulators.runner import emulate_main

            return emulate_main(rest)
        if command == "demo":
            from memsyncd.demo import demo_main

            return demo_main(rest)
        if command == "run":
            from memsyncd.daemon.process import run_main

            return run_main(rest)
    except MemsyncError as error:
        sys.stderr.write(f"memsyncd: {error}\n")
        return error.exit_code
    sys.stderr.write(f"memsyncd: unknown command {command!r}\n\n{USAGE}")
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
