"""``memsyncctl``: parse arguments, answer from a fast path or run a command, map errors to exit codes.

The hot commands (``status``, ``sync --status``, ``enqueue``, ``hook post-tool-use`` and
``--version``) are recognised by a small hand-written dispatch (:func:`hot_args`) and answered by
:mod:`memsyncd.cli.fast` without loading ``argparse``, ``pathlib``, ``typing``, ``dataclasses``,
``urllib``, the engine, pydantic, httpx, structlog or asyncio. The dispatch accepts only the
plain spellings of those commands; anything else (``--help``, abbreviations, ``--opt=value`` of a
subcommand, a value that looks like an option, a malformed number, an extra word) goes to the
argparse grammar (:mod:`memsyncd.cli.parser`), so usage errors and help are argparse's, as before.
Other commands, and status with no daemon, load :mod:`memsyncd.cli.commands` lazily. Output and
exit codes are the same either way; handlers live in ``memsyncd.cli``.
"""

from __future__ import annotations

import os
import sys

from memsyncd.errors import MemsyncError

TYPE_CHECKING = False  # typing and argparse are not loaded on the hot paths; mypy reads the block
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

__all__ = ["build_parser", "hot_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar (:func:`memsyncd.cli.parser.build_parser`)."""
    from memsyncd.cli.parser import build_parser as build

    return build()


class HotArgs:
    """The parsed arguments of a hot command: the attributes argparse's namespace would carry.

    A new option of ``status``, ``sync``, ``enqueue`` or ``hook`` in ``cli/parser.py`` needs its
    default here too (``test_plain_spellings_parse_as_argparse_does`` compares the two).
    """

    def __init__(self, command: str) -> None:
        self.command = command
        self.root: str | None = None
        self.socket: str | None = None
        self.no_daemon = False
        self.verbose = False
        self.json = False
        self.all = False
        self.push = False
        self.pull = False
        self.status = False
        self.dry_run = False
        self.confirm_deletes = False
        self.id: str | None = None
        self.delete = False
        self.level: int | None = None
        self.content_hash: str | None = None
        self.event: str | None = None


_GLOBAL_VALUES = {"--root": "root", "--socket": "socket"}
_GLOBAL_FLAGS = {"--no-daemon": "no_daemon", "-v": "verbose", "--verbose": "verbose"}
_VERSION = object()


def _value(token: str) -> bool:
    """Whether argparse would take ``token`` as an option's value (not empty, not option-like)."""
    return bool(token) and not token.startswith("-")


def hot_args(argv: Sequence[str]) -> HotArgs | object | None:
    """The arguments of a hot command in its plain spelling; ``_VERSION`` for ``--version``; None: use argparse."""
    values: dict[str, str] = {}
    flags: set[str] = set()
    i, n = 0, len(argv)
    while i < n:  # the global options, before the command
        token = argv[i]
        if token == "--version":
            return _VERSION
        if token in _GLOBAL_FLAGS:
            flags.add(_GLOBAL_FLAGS[token])
            i += 1
            continue
        name, eq, inline = token.partition("=")
        if name in _GLOBAL_VALUES:
            value = inline if eq else (argv[i + 1] if i + 1 < n else "")
            if not _value(value):
                return None
            values[_GLOBAL_VALUES[name]] = value
            i += 1 if eq else 2
            continue
        break
    if i >= n:
        return None
    args = HotArgs(argv[i])
    rest = list(argv[i + 1:])
    for key, value in values.items():
        setattr(args, key, value)
    for flag in flags:
        setattr(args, flag, True)
    if args.command == "status":
        return args if _flags_only(rest, {"--json": "json"}, args) else None
    if args.command == "sync":
        if "--status" not in rest or not _flags_only(rest, {"--status": "status", "--json": "json"}, args):
            return None
        return args
    if args.command == "hook":
        if rest != ["post-tool-use"]:
            return None
        args.event = rest[0]
        return args
    if args.command == "enqueue":
        return args if _enqueue(rest, args) else None
    return None


def _flags_only(tokens: list[str], known: dict[str, str], args: HotArgs) -> bool:
    for token in tokens:
        if token not in known:
            return False
        setattr(args, known[token], True)
    return True


def _enqueue(tokens: list[str], args: HotArgs) -> bool:
    """``enqueue ID [--delete] [--level N] [--content-hash H] [--json]`` in any order (argparse's)."""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--delete" or token == "--json":
            setattr(args, token[2:], True)
        elif token in ("--level", "--content-hash"):
            value = tokens[i + 1] if i + 1 < len(tokens) else ""
            if not _value(value):
                return False
            if token == "--level":
                if not value.isascii() or not value.isdigit():
                    return False  # argparse's int() and its message
                args.level = int(value)
            else:
                args.content_hash = value
            i += 1
        elif _value(token) and args.id is None:
            args.id = token
        else:
            return False
        i += 1
    return args.id is not None

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
            try:  # noqa: SIM105 - contextlib is not loaded on the fast paths
                self._stream.flush()
            except (OSError, ValueError):
                pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``memsyncctl``: never lets a traceback reach the user."""
    if sys.stdout is not None and not isinstance(sys.stdout, _PipeSafeStdout):
        sys.stdout = _PipeSafeStdout(sys.stdout)  # type: ignore[assignment,unused-ignore]
    try:
        hot = hot_args(sys.argv[1:] if argv is None else argv)
        if hot is _VERSION:
            from memsyncd import __version__

            print(f"memsyncctl {__version__}", flush=True)  # argparse's version action, without argparse
            raise SystemExit(0)
        if isinstance(hot, HotArgs):
            args: argparse.Namespace = hot  # type: ignore[assignment]  # the namespace's attributes, duck-typed
        else:
            args = build_parser().parse_args(argv)  # --help and usage errors exit here
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
