"""``clew check-template``: the tiny model's and SmolLM2's templates pass; a template that drops past reasoning
(as Qwen3's does) fails the prefix check, one that closes turns with plain text fails the stop check; training
warns on such a template and refuses ``merge_prefix``."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from clew.cli import main
from clew.gateway.template import check_template, prefix_safe
from clew.policy import HFPolicy

# Qwen3-style: a past assistant turn keeps only what follows its </think>
DROPS_REASONING = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<|assistant|>\n"
    "{{ m['content'].split('</think>')[-1].lstrip() }}<|end|>\n"
    "{% else %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CLOSES_WITH_TEXT = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n[end of turn]\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _with_template(policy: HFPolicy, template: str) -> Any:
    tokenizer = copy.deepcopy(policy.tokenizer)
    tokenizer.chat_template = template
    return tokenizer


def _results(tokenizer: Any) -> dict[str, bool]:
    return {c.name: c.ok for c in check_template(tokenizer)}


def test_the_tiny_and_smollm2_templates_pass(tiny_policy: HFPolicy) -> None:
    from clew.policy.models import materialize

    assert all(_results(tiny_policy.tokenizer).values())
    smol = HFPolicy.from_pretrained(materialize("smollm2-135m-instruct"))
    checks = check_template(smol.tokenizer)
    assert all(c.ok for c in checks), checks
    assert "'<|im_end|>' (id 2)" in next(c.detail for c in checks if c.name == "stop token")


def test_a_template_that_drops_past_reasoning_fails_the_prefix_check(tiny_policy: HFPolicy) -> None:
    results = _results(_with_template(tiny_policy, DROPS_REASONING))
    assert results["prefix: reasoning"] is False and results["prefix: plain"] is True
    check = prefix_safe(_with_template(tiny_policy, DROPS_REASONING))
    assert not check.ok and "not kept as sampled" in check.detail and "<think>" in check.detail


def test_a_template_that_closes_turns_with_text_fails_the_stop_check(tiny_policy: HFPolicy) -> None:
    results = _results(_with_template(tiny_policy, CLOSES_WITH_TEXT))
    assert results["stop token"] is False


def _model_with_template(source: Path, folder: Path, template: str) -> Path:
    shutil.copytree(source, folder)
    (folder / "chat_template.jinja").write_text(template)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.slow  # two short CLI runs on the tiny model
def test_cli_exit_codes_and_training_on_a_failing_template(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-template", str(tiny_dir)]) == 0
    bad = _model_with_template(tiny_dir, tmp_path / "bad", DROPS_REASONING)
    assert main(["check-template", str(bad)]) == 1
    assert "FAIL" in capsys.readouterr().out
    config = tmp_path / "run.yaml"
    config.write_text(
        f"policy: {{model: {bad}}}\nenv: {{id: keydoor-v0, kwargs: {{width: 4, height: 4}}}}\niterations: 1\n"
        "tasks_per_iteration: 1\nrollout: {group_size: 2, max_turns: 2, max_new_tokens: 2}\n"
        "eval: {every: 0, episodes: 2}\n"
    )
    assert main(["train", str(config), "train.merge_prefix=true", "--out", str(tmp_path / "refused")]) == 2
    assert "train.merge_prefix=true needs a prefix-safe chat template" in capsys.readouterr().err
    assert main(["train", str(config), "--out", str(tmp_path / "warned")]) == 0
    records = [json.loads(x) for x in (tmp_path / "warned" / "metrics.jsonl").read_text().splitlines()]
    assert any("fails the prefix property" in r.get("message", "") for r in records if r.get("kind") == "warning")
