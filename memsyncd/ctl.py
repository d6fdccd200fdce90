"""``memsyncctl``: parse arguments, answer from a fast path or run a command, map errors to exit codes.

Importing this module loads only the stdlib and memsyncd's stdlib-only modules: ``--version``,
``--help``, ``status`` (daemon up), ``enqueue`` and ``hook post-tool-use`` never load the
engine, pydantic, httpx, structlog or asyncio (:mod:`memsyncd.cli.fast`). Other commands, and
status with no daemon, load :mod:`memsyncd.cli.commands` lazily. Output and exit codes are the
same either way. The grammar is :mod:`memsyncd.cli.parser`; handlers live in ``memsyncd.cli``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from memsyncd.cli.parser import build_parser
from memsyncd.errors import MemsyncError

__all__ = ["build_parser", "main"]

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE


class _PipeSafeStdout:
    """stdout that outlives a reader which went away (``| head``): the command finishes its work.

    The first write or flush that meets a closed pipe points the descriptor at /dev/null, so
    what ``init`` still has to do (store the key, register the root) is done and the exit code
    is the command's own, not 141 half-way through.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            _silence_stdout()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _silence_stdout()
            with contextlib.suppress(OSError, ValueError):
                self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``memsyncctl``: never lets a traceback reach the user."""
    if sys.stdout is not None and not isinstance(sys.stdout, _PipeSafeStdout):
        sys.stdout = _PipeSafeStdout(sys.stdout)  # type: ignore[assignment,unused-ignore]
    try:
        args = build_parser().parse_args(argv)  # --help, --version and usage errors exit here
    except KeyboardInterrupt:
        sys.stderr.write("memsyncctl: interrupted\n")
        return EXIT_INTERRUPTED
    as_json = bool(getattr(args, "json", False))
    try:
        return _run(args)
    except MemsyncError as error:
        from memsyncd.cli.output import report_error

        return report_error(error, as_json=as_json)
    except KeyboardInterrupt:
        sys.stderr.write("memsyncctl: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (e.g. '| head'): nothing more to say
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # noqa: BLE001 - the last resort: one clear line instead of a traceback
        from memsyncd.cli.output import project_error_for, report_error, report_internal_error

        mapped = project_error_for(exc)
        if mapped is not None:
            return report_error(mapped, as_json=as_json)
        _log_internal_error(args)
        return report_internal_error(exc)


def _run(args: argparse.Namespace) -> int:
    if args.command == "roots":
        from memsyncd.cli.roots import roots_command

        return roots_command(args)
    if args.command == "log":
        from memsyncd.cli.activity import log_command

        return log_command(args)
    if args.command == "status" and args.all:
        from memsyncd.cli.roots import status_all_command

        return status_all_command(args)
    from memsyncd.cli.fast import run_fast

    code = run_fast(args)
    if code is not None:
        return code
    from memsyncd.cli.commands import run_command

    return run_command(args)


def _log_internal_error(args: argparse.Namespace) -> None:
    """With -v, the traceback goes into the structured log (the report's attachment)."""
    if not args.verbose:
        return
    try:
        import structlog

        from memsyncd.logs import configure_cli_logging

        configure_cli_logging(verbose=True)
        structlog.get_logger("memsyncctl").exception("internal_error")
    except Exception:  # noqa: BLE001 - logging must never replace the one line below
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
