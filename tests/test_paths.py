"""The cache root: set explicitly (the CLI from the environment), never read from the environment in the library."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clew import paths
from clew.cli import main


@pytest.fixture(autouse=True)
def _default_root() -> Iterator[None]:
    yield
    paths.set_cache_root(None)


def test_the_root_is_the_default_until_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEW_CACHE", str(tmp_path / "ignored"))  # the library does not read it
    assert paths.cache_root() == Path("~/.cache/clew").expanduser()
    paths.set_cache_root(tmp_path)
    assert paths.model_dir("smol") == tmp_path / "models" / "smol"
    assert paths.textworld_dir() == tmp_path / "textworld"


def test_the_cli_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.root_from_environment({}) is None
    assert paths.root_from_environment({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "clew"
    both = {"XDG_CACHE_HOME": str(tmp_path), "CLEW_CACHE": str(tmp_path / "c")}
    assert paths.root_from_environment(both) == tmp_path / "c"
    monkeypatch.setenv("CLEW_CACHE", str(tmp_path / "cli"))
    assert main(["envs"]) == 0
    assert paths.cache_root() == tmp_path / "cli"
