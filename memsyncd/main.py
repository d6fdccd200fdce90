"""``memsyncd``: the daemon's entry point (``run``), the emulators (``emulate``) and the ``demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from memsyncd import __version__
from memsyncd.errors import EXIT_USAGE, MemsyncError

COMMANDS = (
    ("run", "run the sync daemon: every registered root, or one with --root (see 'memsyncd run --help')"),
    ("emulate", "serve loopback emulators of OpenMemory and mem0 (tests, trying it out)"),
    ("demo", "a self-contained walk-through on the emulators (no accounts, no network)"),
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level grammar (help, version, the commands); each command parses its own arguments."""
    parser = argparse.ArgumentParser(
        prog="memsyncd", usage="%(prog)s {run,emulate,demo} ...",
        description="memsyncd: sync AI-assistant memories between a local OpenMemory server and the mem0 cloud.",
        epilog="'memsyncd COMMAND --help' shows a command's options; the client is 'memsyncctl'.")
    parser.add_argument("--version", action="version", version=f"memsyncd {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="{run,emulate,demo}")
    for name, text in COMMANDS:
        commands.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``memsyncd``."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args:
        sys.stdout.write(parser.format_help())
        return EXIT_USAGE
    if args[0].startswith("-"):  # --help, --version, or an unknown option (argparse says so, exit 2)
        try:
            parser.parse_args(args)
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else EXIT_USAGE
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
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
    sys.stderr.write(f"memsyncd: unknown command {command!r}\n\n{parser.format_usage()}")
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
