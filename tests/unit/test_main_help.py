"""``memsyncd --help`` is a normal argparse help: a usage line, the commands, the options."""

from __future__ import annotations

import pytest

from memsyncd.main import main


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_has_a_usage_line_the_commands_and_the_options(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: memsyncd ")
    for word in ("run", "emulate", "demo", "--version", "-h, --help"):
        assert word in out


def test_an_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: memsyncd ") and "--frobnicate" in err
