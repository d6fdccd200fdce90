"""The README names the problems ``status`` shows by the titles it prints (mem0 down: "Network unreachable")."""

from __future__ import annotations

from pathlib import Path

from memsyncd.cli.render import attention_text
from memsyncd.errors import NetworkUnreachableError

README = Path(__file__).parents[2] / "README.md"


def _attention_paragraph() -> str:
    text = " ".join(README.read_text().split())
    start = text.index("**`Needs attention: …`**")
    return text[start:text.index("A run that succeeds clears it", start)]


def test_the_readme_names_mem0_down_by_the_title_status_prints() -> None:
    shown = attention_text(NetworkUnreachableError("cannot connect to https://api.mem0.ai").to_dict())
    title = shown.split(":")[0]
    assert title == "Network unreachable"
    paragraph = _attention_paragraph()
    assert f"`{title}`" in paragraph
    assert "mem0 not reachable" not in paragraph
