"""The engine's Chinese labels and the web's translatable copies of them never drift apart."""

from __future__ import annotations

from engine.directory import ORG_KINDS, ROLES
from web.labels import KIND_LABELS, ROLE_LABELS


def test_every_role_and_kind_has_the_same_label_for_translation() -> None:
    assert {k: str(v._args[0]) for k, v in ROLE_LABELS.items()} == ROLES
    assert {k: str(v._args[0]) for k, v in KIND_LABELS.items()} == ORG_KINDS
