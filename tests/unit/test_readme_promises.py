"""The README's promises match what the program does (issue 15): init's questions, what status keeps."""

from __future__ import annotations

import argparse
from pathlib import Path

from memsyncd.cli.init import gather_choices
from memsyncd.daemon.root_service import RootService
from memsyncd.engine.report import PushReport, ReconcileReport, SyncReport
from memsyncd.errors import AuthError, LocalUnreachableError

README = Path(__file__).parents[2] / "README.md"


class RecordingPrompter:
    def __init__(self) -> None:
        self.questions: list[str] = []

    def ask(self, question: str, default: str) -> str:
        self.questions.append(question)
        return default or "x"

    def secret(self, question: str) -> str:
        return ""

    def say(self, text: str) -> None:
        pass


def test_readme_names_every_question_init_asks() -> None:
    flags = {name: None for name in ("local_url", "user_id", "cloud_url", "cloud_user_id", "app_id", "agent_id",
                                     "default_level")}
    prompter = RecordingPrompter()
    gather_choices(argparse.Namespace(no_cloud=False, **flags), prompter)
    text = " ".join(README.read_text().split())
    assert any("app id" in q for q in prompter.questions) and any("agent id" in q for q in prompter.questions)
    for question in prompter.questions:
        name = question.split(" (")[0]
        assert name in text, f"init asks {question!r} but the README does not say so"


def _service() -> RootService:
    service = RootService.__new__(RootService)  # only the outcome memory is exercised here
    service._attention = {}
    return service


def test_status_keeps_the_last_runs_problems_until_a_run_clears_them() -> None:
    service = _service()
    refused = SyncReport(mode="full", queue_path="q", reconcile=ReconcileReport(refused="7 of 10 deleted"))
    service._remember_outcome(refused, None)
    assert [p["title"] for p in service.attention()] == ["cloud deletions refused"]
    assert "max_delete_fraction" in service.attention()[0]["message"]
    down = LocalUnreachableError("cannot connect to openmemory at http://127.0.0.1:9: ConnectError")
    down.title = "OpenMemory at http://127.0.0.1:9 is not reachable"
    service._remember_outcome(SyncReport(mode="push", queue_path="q", fatal=down), None)
    assert len(service.attention()) == 2
    since = service.attention()[1]["since"]
    service._remember_outcome(SyncReport(mode="push", queue_path="q", fatal=down), None)
    assert service.attention()[1]["since"] == since, "the same problem keeps its first time"
    service._remember_outcome(SyncReport(mode="push", queue_path="q", push=PushReport(attempted=1, created=1)), None)
    assert [p["title"] for p in service.attention()] == ["cloud deletions refused"]  # a run that synced clears it
    service._remember_outcome(SyncReport(mode="full", queue_path="q", reconcile=ReconcileReport()), None)
    assert service.attention() == []
    service._remember_outcome(SyncReport(mode="pull", queue_path="q", dry_run=True), AuthError("401"))
    assert service.attention()[0]["type"] == "AuthError"
