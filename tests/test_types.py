import json
import subprocess
import sys

from clew.types import Episode, Group, Turn


def _group() -> Group:
    t1 = Turn([1, 2, 3], [4, 5], [-0.5, -1.25], "up", 0.0, "obs", "0,0,0", {"invalid_action": False})
    t2 = Turn([1, 2, 3, 4, 5, 6], [7], [-0.1], "open", 1.0, "done", None, {})
    ep = Episode("keydoor-v0#3", 0, 3, [t1, t2], 1.0, True, False, None, None, "first")
    return Group(0, "keydoor-v0#3", 3, [ep, Episode("keydoor-v0#3", 0, 3, error="boom", truncated=True)])


def test_group_round_trips_through_json_without_loss() -> None:
    group = _group()
    again = Group.from_json(json.dumps(json.loads(group.to_json())))
    assert again == group
    assert again.episodes[0].turns[0].behavior_logprobs == [-0.5, -1.25]


def test_episode_properties() -> None:
    ep = _group().episodes[0]
    assert ep.success and ep.done and ep.invalid_actions == 0


def test_types_and_envs_import_no_torch() -> None:
    """The records, envs, credit, the engine contract, rollout and the plug-in loader: torch loads on first use of
    a model, never on import (``clew.policy``'s torch-backed names are lazy)."""
    modules = "clew.types, clew.envs, clew.store.run, clew.credit, clew.policy.base, clew.rollout, clew.plugins"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_records_from_before_the_typed_turn_fields_still_load() -> None:
    """Context edits, cuts and entropies were ``info`` keys before they were typed fields of ``Turn``."""
    info = {"context_edit": "summary", "cut": True, "edit_truncated": True, "token_entropies": [0.5, 0.25]}
    info["invalid_action"] = True
    old = {"prompt_ids": [1], "action_ids": [2, 3], "behavior_logprobs": [-0.1, -0.2], "action_text": "s",
           "reward": 0.0, "penalty": 0.0, "observation": "", "state_key": None, "info": info}  # fmt: skip
    turn = Turn.from_dict(old)
    assert (turn.context_edit, turn.cut, turn.token_entropies) == ("summary", True, [0.5, 0.25])
    assert turn.info == {"invalid_action": True} and not turn.env_step
    assert Turn.from_dict(turn.to_dict()) == turn
