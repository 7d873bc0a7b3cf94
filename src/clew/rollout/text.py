"""Episodes played by a text policy that sees the conversation as chat messages (an API model in ``clew eval``).

A text policy has no token ids: it gets the episode so far as OpenAI-style messages (each observation a
``user`` message, each action an ``assistant`` one: the full history) and answers with text, which goes to
the env as is. The turns keep the text, reward, observation, info and state key with empty ids (there is
nothing to train on), and the episode ends by ``collect``'s rules: ``max_turns`` truncates, a reply cut at the
token limit (``finish_reason == "length"``) is stepped and then ends the episode (``max_new_tokens``), an env
failure while stepping is typed by ``clew.envs.failure_type`` (``policy`` unless an ``InfraError``), and a
request that fails (the endpoint down, a malformed answer) is ``infra``. Request seeds are ``derive_seed(seed,
group_id, member, turn)``, as in ``collect``.
"""

from __future__ import annotations

from collections.abc import Callable

from clew.envs import Env, HasStateKey, failure_type, make
from clew.policy.base import Completion
from clew.rollout.endings import apply_step, close, env_turns, fail, release, step_failure
from clew.rollout.tasks import Task, derive_seed
from clew.types import Episode, Turn

Messages = list[dict[str, str]]
TextPolicy = Callable[[Messages, int], tuple[str, str]]  # (messages, seed) -> (reply, finish reason)


def play_text(policy: TextPolicy, task: Task, group_id: int, member: int, max_turns: int, seed: int) -> Episode:
    """One episode of ``task`` played by ``policy``, start to end."""
    episode = Episode(task.task_id, group_id, task.seed)
    try:
        env = make(task.env_id, **task.env_kwargs)
        first = env.reset(task.seed)
    except Exception as exc:  # no action caused it
        fail(episode, exc, "infra")
        return episode
    episode.first_observation, messages = first, [{"role": "user", "content": first}]
    try:
        while not episode.done:
            if env_turns(episode) >= max_turns:
                close(episode, "max_turns")
                break
            try:
                text, finish = policy(messages, derive_seed(seed, group_id, member, len(episode.turns)))
            except Exception as exc:
                fail(episode, exc, "infra")
                break
            try:
                _step(episode, env, text, finish)
            except Exception as exc:  # outside the env's step (its state key, say): not the policy's doing
                fail(episode, exc, "infra")
                break
            messages.append({"role": "assistant", "content": text})
            messages.append({"role": "user", "content": episode.turns[-1].observation})
    finally:
        release(env)
    return episode


def _step(episode: Episode, env: Env, text: str, finish: str) -> None:
    state = env.state_key() if isinstance(env, HasStateKey) else None
    try:
        result = env.step(text)
    except Exception as exc:
        failure = failure_type(exc, in_step=True)
        flag = {"invalid_action": True, "step_failure": step_failure(exc)} if failure == "policy" else {}
        episode.turns.append(Turn([], [], [], text, state_key=state, info=flag, cut=finish == "length"))
        fail(episode, exc, failure)
        return
    reward, info = float(result.reward), dict(result.info)
    episode.turns.append(Turn([], [], [], text, reward, result.observation, state, info, cut=finish == "length"))
    apply_step(episode, result, Completion([], [], finish, text))
