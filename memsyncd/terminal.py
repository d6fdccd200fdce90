"""What is safe to print on a terminal: control characters from outside shown escaped (stdlib only).

Memory texts, server messages and file names come from outside; an ESC sequence in them could
rewrite the user's screen. Every human output (the CLI's blocks, the log on a terminal) passes
through :func:`escape_controls`; ``--json`` output needs no help (JSON escapes them).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re

_CONTROLS_PATTERN = "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
_controls: re.Pattern[str] | None = None


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` safe for a terminal: control characters (ESC included) shown as ``\\xNN``/``\\uNNNN``.

    Newline and tab are kept. Use it on every human output that carries text from outside
    (memory texts, server messages, file names); ``--json`` output needs no help (JSON escapes them).
    """
    if text.replace("\n", "").replace("\t", "").isprintable():  # every character the pattern matches is not
        return text  # printable: most texts need no regex (compiling it costs the fast paths ~0.3 ms)
    global _controls
    if _controls is None:
        import re

        _controls = re.compile(_CONTROLS_PATTERN)
    return _controls.sub(_escape_one, text)
