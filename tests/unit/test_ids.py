"""Memory ids: what is refused before it reaches the queue, and what is let through."""

from __future__ import annotations

import pytest

from memsyncd.ids import MAX_ID_LENGTH, id_problem


@pytest.mark.parametrize("value", ["0b5e1c2a-4a57-4b8e-9d0e-3f1f2c3d4e5f", "m1", "a.b", "x:y@z", "x" * MAX_ID_LENGTH])
def test_ids_servers_could_use_pass(value: str) -> None:
    """UUIDs and other printable ids up to the bound are accepted (and escaped where the id is sent)."""
    assert id_problem(value) is None


@pytest.mark.parametrize(("value", "words"), [
    ("", "empty"), ("   ", "empty"), (None, "empty"), (5, "empty"),
    ("x" * (MAX_ID_LENGTH + 1), "at most"), ("a b", "whitespace"), ("a\x00b", "control"), ("a\nb", "whitespace"),
    ("a/b", "'/'"), ("../../etc/passwd", "'/'"), ("M1?x=1", "'?'"), ("M1#frag", "'#'"), ("M1%2F", "'%'"),
    ("a\\b", "'\\\\'"), ("..", "only dots"), (".", "only dots"), ("../stats/?user_id=x&", "'/'"),
])
def test_impossible_ids_are_refused_with_a_reason(value: object, words: str) -> None:
    """Each refusal says what is wrong."""
    problem = id_problem(value)
    assert problem is not None and words in problem
