"""`onerec rollout`: which pipeline state folder a rollout moves (`state_root`)."""

from __future__ import annotations

import pytest
import typer

from onerec import registry
from onerec.app.rollout_cli import follow, state_root


def test_the_state_root_is_the_parent_of_a_gitops_repository_holding_a_model(tmp_path):
    repo = tmp_path / registry.GITOPS
    repo.mkdir()
    assert state_root(repo, None) is None  # no production model nor candidate beside it
    (tmp_path / registry.CANARY).mkdir()
    assert state_root(repo, None) == tmp_path.resolve()
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert state_root(other, None) is None  # not named gitops: not the pipeline's layout


def test_an_explicit_root_must_hold_a_production_model_or_a_candidate(tmp_path, capsys):
    with pytest.raises(typer.Exit) as e:
        state_root(tmp_path / "repo", tmp_path)
    assert e.value.exit_code == 2
    (tmp_path / registry.PRODUCTION).mkdir()
    assert state_root(tmp_path / "repo", tmp_path) == tmp_path


def test_follow_without_a_state_root_moves_nothing(tmp_path):
    assert follow(tmp_path / "repo", "dev", None) is None
