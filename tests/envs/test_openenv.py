"""openenv/<env> (clew.envs.adapters.openenv_text) on OpenEnv environments built here, no downloads.

Games: a number-guessing game (typed ``Environment[Act, Obs, State]``, seeded, reward 1 on a hit), a word
game with a two-field action and a seedless ``reset`` (types read from the ``step`` annotation), and the echo
env that ``openenv init`` generates from openenv-core's own template (an installed-package layout).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clew.envs import make
from clew.envs.base import EnvFinishedError, InfraError, StepResult
from clew.envs.checker import check_env

pytest.importorskip("openenv.core")
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field

from clew.envs.adapters.openenv_text import OpenEnv, render_observation

HERE = Path(__file__).resolve().parent
MODULE = Path(__file__).stem  # this module, as the server subprocess imports it


# ----------------------------------------------------------------------------- games


class GuessAction(Action):
    guess: int = Field(..., description="your guess, an integer from 1 to 100")


class GuessObservation(Observation):
    feedback: str = ""
    attempts_left: int = 0


class GuessNumber(Environment[GuessAction, GuessObservation, State]):
    """Guess a number in 1..100 in 8 tries: 'higher' / 'lower'; reward 1 on a hit."""

    def __init__(self, attempts: int = 8) -> None:
        super().__init__()
        self.attempts = attempts
        self._state = State()
        self.secret = 0
        self.left = 0

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> GuessObservation:
        self.secret = random.Random(seed).randint(1, 100)
        self.left = self.attempts
        self._state = State(episode_id=episode_id, step_count=0)
        return GuessObservation(feedback="I picked a number from 1 to 100. Guess it.", attempts_left=self.left)

    def step(self, action: GuessAction, timeout_s: float | None = None, **kwargs: Any) -> GuessObservation:
        if action.guess < 0:
            raise ValueError("negative guess crashes the game")
        self._state.step_count += 1
        self.left -= 1
        if action.guess == self.secret:
            return GuessObservation(feedback="Correct!", attempts_left=self.left, done=True, reward=1.0)
        word = "higher" if action.guess < self.secret else "lower"
        return GuessObservation(
            feedback=f"{action.guess} is wrong: go {word}.",
            attempts_left=self.left,
            done=self.left == 0,
            reward=0.0,
            metadata={"secret_hint": word},
        )

    @property
    def state(self) -> State:
        return self._state


class WordAction(Action):
    word: str
    count: int = Field(..., description="how many letters the word has")


class WordObservation(Observation):
    prompt: str = ""
    score: int = 0


class WordGame(Environment):
    """Three rounds: name a word that starts with the given letter and say its length; seedless reset."""

    LETTERS = "sta"

    def __init__(self) -> None:
        super().__init__()
        self.round = 0
        self.score = 0

    def reset(self) -> WordObservation:  # no seed, like the openenv init template
        self.round, self.score = 0, 0
        return WordObservation(prompt=self._prompt(), score=0)

    def _prompt(self) -> str:
        return f"Round {self.round + 1}: a word starting with {self.LETTERS[self.round]!r}, and its length."

    def step(self, action: WordAction) -> WordObservation:  # type: ignore[override]
        good = action.word.lower().startswith(self.LETTERS[self.round]) and len(action.word) == action.count
        self.score += int(good)
        self.round += 1
        done = self.round == len(self.LETTERS)
        return WordObservation(prompt="" if done else self._prompt(), score=self.score, done=done, reward=float(good))

    @property
    def state(self) -> State:
        return State(step_count=self.round)


def play_guess(env: OpenEnv, seed: int, fmt: str = "{}") -> list[StepResult]:
    """Binary search, the guess written through ``fmt``."""
    env.reset(seed)
    lo, hi, results = 1, 100, []
    while True:
        mid = (lo + hi) // 2
        result = env.step(fmt.format(mid))
        results.append(result)
        if result.terminated or result.truncated:
            return results
        if "higher" in result.observation:
            lo = mid + 1
        else:
            hi = mid - 1


class NapAction(Action):
    seconds: float = 0.0


class NapObservation(Observation):
    said: str = ""


class Nap(Environment[NapAction, NapObservation, State]):
    """Sleeps as long as the action says, then answers with the episode's seed and the nap."""

    def __init__(self) -> None:
        super().__init__()
        self.seed = 0

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> NapObservation:
        self.seed = seed or 0
        return NapObservation(said=f"reset {self.seed}")

    def step(self, action: NapAction, timeout_s: float | None = None, **kwargs: Any) -> NapObservation:
        time.sleep(action.seconds)
        return NapObservation(said=f"{self.seed} slept {action.seconds:g}")

    @property
    def state(self) -> State:
        return State()


def make_guess(attempts: int = 8) -> GuessNumber:
    """A factory function (not a class) for server mode."""
    return GuessNumber(attempts)


GUESS = f"{MODULE}:GuessNumber"
WORD = f"{MODULE}:WordGame"


# ----------------------------------------------------------------------------- in-process


def test_guess_in_process_wins_with_reward() -> None:
    env = OpenEnv(GUESS, success_reward=1.0)
    first = env.reset(3)
    assert "Guess it." in first and "attempts_left: 8" in first
    assert "Reply with the guess: an integer (your guess, an integer from 1 to 100)." in first
    results = play_guess(env, 3)
    last = results[-1]
    assert last.terminated and not last.truncated and last.reward == 1.0
    assert last.info["success"] is True and last.info["openenv_reward"] == 1.0
    assert all(r.reward == 0.0 for r in results[:-1])
    assert results[0].info["metadata"]["secret_hint"] in ("higher", "lower")
    assert env.seeded is True
    with pytest.raises(EnvFinishedError):
        env.step("50")


@pytest.mark.parametrize(
    "fmt", ["{}", " {} \n", '{{"guess": {}}}', '```json\n{{"guess": {}}}\n```', 'My guess: {{"guess": {}}}']
)
def test_guess_action_forms(fmt: str) -> None:
    env = OpenEnv(GUESS)
    assert play_guess(env, 11, fmt)[-1].reward == 1.0


def test_seed_sets_the_game() -> None:
    env = OpenEnv(GUESS)
    transcripts = [[r.observation for r in play_guess(env, s)] for s in (1, 1, 2)]
    assert transcripts[0] == transcripts[1] != transcripts[2]


@pytest.mark.parametrize("text", ["banana", "", '{"guess": "x"}', '{"guess": 5, "extra": 1}', '{"other": 3}', "[1, 2]"])
def test_invalid_action_is_a_step_not_a_crash(text: str) -> None:
    env = OpenEnv(GUESS, invalid_action_reward=-0.1)
    env.reset(0)
    result = env.step(text)
    assert result.info["invalid_action"] is True and result.info["error"]
    assert result.reward == -0.1 and not result.terminated and not result.truncated
    assert result.observation.startswith("Invalid action:")
    ok = env.step("50")  # the game was not stepped: all 8 attempts remain
    assert "attempts_left: 7" in ok.observation or ok.terminated


def test_max_steps_truncates_invalid_turns_included() -> None:
    env = OpenEnv(GUESS, max_steps=3)
    env.reset(5)
    results = [env.step(t) for t in ("nope", "1", "2")]
    assert [r.truncated for r in results] == [False, False, True]
    assert not any(r.terminated for r in results)
    with pytest.raises(EnvFinishedError):
        env.step("3")


def test_env_exception_propagates_in_process() -> None:
    env = OpenEnv(GUESS)
    env.reset(0)
    with pytest.raises(ValueError, match="negative guess"):
        env.step("-4")


@pytest.mark.parametrize("env_id", [GUESS, WORD])
def test_check_env_contract_through_the_registry(env_id: str) -> None:
    check_env(make(f"openenv/{env_id}", max_steps=5), seeds=(0, 1))


def test_word_game_json_action_and_seedless_reset() -> None:
    env = OpenEnv(WORD, env_kwargs={})
    first = env.reset(123)
    assert env.seeded is False
    assert first.startswith("prompt: Round 1: a word starting with 's'")
    assert 'Reply with one JSON object with the fields "word" (string); "count" (integer: how many letters' in first
    bad = env.step("sun 3")
    assert bad.info["invalid_action"] and "JSON object" in bad.info["error"]
    missing = env.step('{"word": "sun"}')
    assert missing.info["invalid_action"] and "count" in missing.info["error"]
    r1 = env.step('{"word": "sun", "count": 3}')
    assert r1.reward == 1.0 and "Round 2" in r1.observation and "score: 1" in r1.observation
    r2 = env.step('Sure! {"word": "tree", "count": 9}')
    assert r2.reward == 0.0
    r3 = env.step('{"word": "apple", "count": "5"}')
    assert r3.terminated and r3.reward == 1.0 and r3.observation == "prompt: \nscore: 2"


def test_action_field_override_and_observation_field() -> None:
    env = OpenEnv(GUESS, observation_field="feedback", instructions=False)
    assert env.reset(0) == "I picked a number from 1 to 100. Guess it."
    with pytest.raises(ValueError, match="action_field"):
        OpenEnv(GUESS, action_field="nope")


def test_bad_ids() -> None:
    with pytest.raises(ValueError, match="cannot import"):
        OpenEnv("no_such_module_xyz:Env")
    with pytest.raises(ValueError, match="no OpenEnv env package"):
        OpenEnv("no_such_env_xyz")
    with pytest.raises(ValueError, match="mode"):
        OpenEnv(GUESS, mode="docker")


def test_render_observation() -> None:
    assert render_observation({"text": "hi"}) == "hi"
    assert render_observation({"a": 1, "b": None, "c": "x\ny"}) == "a: 1\nc:\nx\ny"
    assert render_observation({"a": [1, 2], "b": "z"}, only="a") == "[1, 2]"


# ----------------------------------------------------------------------------- local server


def test_guess_over_local_server_matches_in_process() -> None:
    local = OpenEnv(GUESS)
    served = OpenEnv(GUESS, mode="server")
    try:
        assert served.base_url and served.base_url.startswith("http://127.0.0.1:")
        assert served.reset(7) == local.reset(7)
        for text in ("50", "oops", '{"guess": "x"}', "25", "75"):
            a, b = local.step(text), served.step(text)
            assert (a.observation, a.reward, a.terminated, a.truncated) == (
                b.observation,
                b.reward,
                b.terminated,
                b.truncated,
            )
            assert a.info.get("invalid_action") == b.info.get("invalid_action")
        assert "metadata" not in served.step("60").info  # the wire format drops metadata
        served.reset(7)
        with pytest.raises(RuntimeError, match="negative guess"):
            served.step("-1")
        assert play_guess(served, 9)[-1].reward == 1.0  # the session survives an env error
    finally:
        proc = served._server.proc  # type: ignore[union-attr]
        served.close()
    assert proc.poll() is not None


# ----------------------------------------------------------------------------- echo (openenv init template)


@pytest.fixture(scope="module")
def echo_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``openenv init clew_echo``: openenv-core's own template env, generated offline."""
    root = tmp_path_factory.mktemp("echo")
    done = subprocess.run(
        [sys.executable, "-m", "openenv.cli", "init", "clew_echo", "--output-dir", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0 or not (root / "clew_echo" / "server" / "app.py").exists():
        pytest.skip(f"openenv init unavailable here: {done.stderr[-300:]}")
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


def test_echo_package_in_process(echo_pkg: Path) -> None:
    env = OpenEnv("clew_echo", max_steps=2)
    assert env.reset(0) == "echoed_message: Clew Echo environment ready!\nmessage_length: 0"
    r = env.step("  hello  ")
    assert r.observation == "echoed_message: hello\nmessage_length: 5" and r.reward == pytest.approx(0.5)
    assert r.info["metadata"] == {"original_message": "hello", "step": 1}
    r2 = env.step("bye")
    assert r2.truncated and not r2.terminated
    check_env(OpenEnv("clew_echo", max_steps=3), seeds=(0, 1))


def test_servers_started_side_by_side_each_get_their_own_port(echo_pkg: Path) -> None:
    """Each server binds its own port and names it (no port picked free here and bound later there)."""
    with ThreadPoolExecutor(3) as pool:
        served = list(pool.map(lambda _: OpenEnv("clew_echo", app="clew_echo.server.app:app", max_steps=3), range(3)))
    try:
        assert len({env.base_url for env in served}) == 3
        for i, env in enumerate(served):
            env.reset(i)
            assert env.step(f"m{i}").observation == f"echoed_message: m{i}\nmessage_length: 2"
    finally:
        for env in served:
            env.close()


def test_echo_app_server_and_remote(echo_pkg: Path) -> None:
    served = OpenEnv("clew_echo", app="clew_echo.server.app:app", max_steps=3)
    try:
        assert served.reset(0).startswith("echoed_message: Clew Echo environment ready!")
        assert served.step("hi there").observation == "echoed_message: hi there\nmessage_length: 8"
    finally:
        served.close()
    # an already running server (started by hand here), reached by base_url
    port = served.base_url.rsplit(":", 1)[1]  # type: ignore[union-attr]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "clew_echo.server.app:app", "--port", port, "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(300):
            try:
                opener.open(url + "/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        remote = OpenEnv("echo", base_url=url)
        assert remote.reset(1).startswith("echoed_message:")
        assert remote.step("abc").reward == pytest.approx(0.3)
        remote.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_file_path_id_runs_the_shipped_example() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "hub_envs" / "guess_openenv.py"
    env = make(f"openenv/{path}:GuessNumber", success_reward=1.0, env_kwargs={"high": 100, "attempts": 8})
    check_env(env, seeds=(0, 1))
    assert "not a number" in (env.reset(3), env.step("no idea"))[1].observation  # costs no guess
    results = play_guess(env, 3, "I guess {}")
    assert results[-1].terminated and results[-1].info["success"] and results[-1].reward == 1.0


def test_a_timed_out_message_ends_the_session_and_reset_opens_a_new_one() -> None:
    env = OpenEnv(f"{MODULE}:Nap", mode="server", message_timeout_s=0.5)
    try:
        assert env.reset(4) == "reset 4\n\nReply with the seconds: a number."
        with pytest.raises(TimeoutError):
            env.step("2")
        with pytest.raises(InfraError, match="broke earlier"):
            env.step("0")
        time.sleep(2)  # the late reply of the first session must never answer the new one
        assert env.reset(5).startswith("reset 5")
        assert env.step("0").observation == "5 slept 0"
    finally:
        env.close()


def test_a_server_factory_function_and_an_observation_field_typo() -> None:
    env = OpenEnv(f"{MODULE}:make_guess", mode="server", env_kwargs={"attempts": 3}, observation_field="feedbak")
    try:
        with pytest.raises(ValueError, match="observation_field 'feedbak' is not a field"):
            env.reset(0)
    finally:
        env.close()


def test_the_server_stops_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from clew.envs.adapters.openenv_text import OpenEnv\n"
        f"env = OpenEnv('{MODULE}:Nap', mode='server')\n"
        "print(env._server.proc.pid, flush=True)\n"
        "os._exit(0)  # no close, no finalizers: the server must notice on its own\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    pid = int(done.stdout.split()[-1])
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail("the server outlived the process that started it")
