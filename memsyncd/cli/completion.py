"""``memsyncctl completion bash|zsh|fish``: shell completion scripts generated from the argparse grammar.

shtab reads the same parser ``memsyncctl`` uses, so every subcommand and option is
completed without a hand-written script to keep in sync. Install lines (README):

    bash: memsyncctl completion bash > ~/.local/share/bash-completion/completions/memsyncctl
    zsh:  memsyncctl completion zsh > "${fpath[1]}/_memsyncctl"   (any directory on $fpath)
    fish: memsyncctl completion fish > ~/.config/fish/completions/memsyncctl.fish
"""

from __future__ import annotations

import argparse

import shtab

SHELLS = ("bash", "zsh", "fish")
_DIRECTORY_OPTIONS = {"--root", "--project"}
_FILE_OPTIONS = {"--socket"}


def _mark_paths(parser: argparse.ArgumentParser) -> None:
    """Let options that take a directory or a file complete paths (shtab's ``complete`` attribute)."""
    for action in parser._actions:
        if _DIRECTORY_OPTIONS.intersection(action.option_strings):
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif _FILE_OPTIONS.intersection(action.option_strings):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _mark_paths(child)


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell`` (one of :data:`SHELLS`)."""
    _mark_paths(parser)
    script = shtab.complete(parser, shell=shell)
    return script if script.endswith("\n") else script + "\n"
