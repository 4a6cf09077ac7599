"""The roles of an evaluation report (metrics/eval.json), importable without numpy for the
report page: val and test (held-out utterances of training speakers), then the
unseen-speaker roles, "verify" and one "verify_<name>" per further trial list."""

from __future__ import annotations

ROLES = ("val", "test")


def unseen_roles(report: dict) -> list[str]:
    """The unseen-speaker roles of `report`, in its order."""
    return [role for role in report if role == "verify" or role.startswith("verify_")]
