"""``clew view`` on a team run (``roles:``) serves each role's run."""

from pathlib import Path

from clew.cli_runs import with_roles


def test_a_team_run_is_its_roles(tmp_path: Path) -> None:
    for role in ("verifier", "solver"):
        (tmp_path / "team" / "roles" / role).mkdir(parents=True)
    (tmp_path / "single").mkdir()
    assert with_roles(tmp_path / "team") == [tmp_path / "team" / "roles" / r for r in ("solver", "verifier")]
    assert with_roles(tmp_path / "single") == [tmp_path / "single"]
