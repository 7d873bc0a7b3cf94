from pathlib import Path

import pytest
import yaml

from clew.envs import families
from clew.trainer.config import RunConfig, apply_override, load_config, preset_names

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    env_id = (yaml.safe_load(path.read_text()).get("env") or {}).get("id", "")  # a harness config has no env
    family = next((f for f in families() if env_id.startswith(f"{f.prefix}/")), None)
    if family is not None and not family.installed:
        pytest.skip(f"needs the {family.extra} extra")
    assert isinstance(load_config(path), RunConfig)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates(name: str) -> None:
    assert load_config(None, [f"preset={name}"]).credit.name


def test_expected_presets_exist() -> None:
    expected = {
        "reinforce",
        "grpo",
        "dr_grpo",
        "rloo",
        "reinforce_pp",
        "gigpo",
        "dapo",
        "gspo",
        "turn_returns",
        "igpo",
        "ppo",
        "remax",
        "infopo",
        "pbsd",
        "siop",
        "oprl",
        "spo",
        "hiper",
    }
    assert expected <= set(preset_names())


def test_overrides_apply_after_file_and_preset(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("preset: gigpo\nseed: 1\ncredit: {params: {gamma: 0.9}}\n")
    cfg = load_config(cfg_file, ["seed=3", "credit.params.step_weight=0.5"])
    assert cfg.seed == 3 and cfg.credit.name == "gigpo"
    assert cfg.credit.params == {
        "gamma": 0.9,
        "step_weight": 0.5,
        "mode": "mean_norm",
        "penalty_placement": "advantage",
    }


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.minibatch_rows=0", "train.minibatch_rows"),
        ("rollout.context=everything", "rollout.context"),
        ("objective.aggregation=mean", "token_mean"),
        ("credit.name=magic", "available: .*grpo"),
        ("credit.params.gamm=0.9", "valid: .*scale_by_std"),
        ("objective.params.clip=0.1", "valid: .*clip_low"),
        ("batch_size=8", "batch_size"),
        ("preset=nope", "available: .*gigpo"),
    ],
)
def test_invalid_values_fail_naming_the_field(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_group_size_one_rejected_for_group_relative_credit() -> None:
    with pytest.raises(ValueError, match="group_size 1 cannot form a group-relative baseline"):
        load_config(None, ["credit.name=grpo", "rollout.group_size=1"])
    assert load_config(None, ["credit.name=reinforce", "rollout.group_size=1"]).rollout.group_size == 1


def test_switching_estimator_drops_the_presets_params() -> None:
    cfg = load_config(None, ["preset=gigpo", "credit.name=grpo"])
    assert cfg.credit.name == "grpo" and cfg.credit.params == {}
    kept = load_config(None, ["preset=gigpo", "credit.params.gamma=0.9"])
    assert kept.credit.params["gamma"] == 0.9 and kept.credit.params["step_weight"] == 1.0


def test_cli_reports_invalid_config_without_traceback(capsys) -> None:  # type: ignore[no-untyped-def]
    from clew.cli import main

    assert main(["train", str(ROOT / "configs" / "keydoor-demo.yaml"), "train.lr=-1", "--out", "/nonexistent/x"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_an_override_that_switches_a_named_component_replaces_its_params() -> None:
    base = "configs/keydoor-summary.yaml"  # rollout.context: {name: summary, params: {every: 6}}
    window = load_config(base, ["rollout.context={name: window, params: {turns: 1}}"]).rollout.context
    assert (window.name, window.params) == ("window", {"turns": 1})
    assert load_config(base, ["rollout.context.name=full"]).rollout.context.params == {}
    assert load_config(base, ["rollout.context.params.every=3"]).rollout.context.params == {"every": 3}
    objective = {"objective": {"name": "ppo_clip", "params": {"x": 1}, "kl_coef": 0.05}}
    assert apply_override(objective, "objective.name=gspo") == {"objective": {"name": "gspo", "kl_coef": 0.05}}
    assert apply_override(objective, "objective.name=ppo_clip") == objective  # same name: nothing dropped
    kwargs = {"env": {"kwargs": {"name": "coin", "level": 3}}}  # not a named component: merged as before
    assert apply_override(kwargs, "env.kwargs.name=gold") == {"env": {"kwargs": {"name": "gold", "level": 3}}}
    with pytest.raises(ValueError, match=r"rollout.context: .*'window' has no parameter\(s\) \['every'\]"):
        load_config(
            base, ["rollout.context.params={every: 3}", "rollout.context.name=window", "rollout.context.params.every=2"]
        )


def test_cluster_config_is_checked_at_construction() -> None:
    cfg = load_config(None, ["cluster={rollout_workers: 2, learners: 2}"])
    assert cfg.cluster is not None and cfg.cluster.address == "local" and cfg.cluster.env_workers == 0
    assert load_config(None, []).cluster is None
    with pytest.raises(ValueError, match=r"cluster\.address must be"):
        load_config(None, ["cluster={address: 'somewhere'}"])
    with pytest.raises(ValueError, match="learners"):
        load_config(None, ["cluster={learners: 0}"])
    with pytest.raises(ValueError, match=r"backend=nccl needs learner ranks on GPUs"):
        load_config(None, ["cluster={backend: nccl}"])
    with pytest.raises(ValueError, match=r"cluster\.gpus: Extra inputs"):
        load_config(None, ["cluster={gpus: 2}"])


def test_max_staleness_needs_tis() -> None:
    assert load_config(None, ["rollout.max_staleness=1"]).objective.tis_cap == 2.0  # one process overlaps too
    with pytest.raises(ValueError, match=r"set objective\.tis_cap"):
        load_config(None, ["rollout.max_staleness=1", "cluster={learners: 1}", "objective.tis_cap=null"])
    cfg = load_config(None, ["rollout.max_staleness=2", "cluster={learners: 1}"])
    assert cfg.objective.tis_cap == 2.0
