"""Rollout engines as Ray actors: the same samples as the in-process engine, weights that reach every worker,
and a worker death that loses only its own requests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from clew.policy import Completion, HFPolicy, SamplingParams, make_engine
from clew.policy.remote import EngineWorkerDied, RayEngines

PARAMS = SamplingParams(temperature=1.0, max_new_tokens=6)


def _prompts(policy: HFPolicy, n: int) -> list[list[int]]:
    return [policy.tokenizer.encode(f"Grid 4x4. You are at ({i % 4},{i // 4}). Actions: up, down.") for i in range(n)]


def _same(got: Completion, want: Completion) -> None:
    assert got.token_ids == want.token_ids
    assert got.logprobs == pytest.approx(want.logprobs, abs=1e-5)


def _drain(engines: RayEngines, limit_s: float = 300.0) -> dict[int, Completion | Exception]:
    done: dict[int, Completion | Exception] = {}
    deadline = time.monotonic() + limit_s
    while engines.pending() and time.monotonic() < deadline:
        done.update(engines.poll())
    assert engines.pending() == 0
    return done


@pytest.fixture()
def engines(ray_cluster: Any, tiny_dir: Path) -> Any:
    engines = RayEngines.start(2, "hf", str(tiny_dir), {}, max_restarts=2, num_cpus=0)
    yield engines
    engines.close()


def test_generate_and_stream_equal_the_local_engine(engines: RayEngines, tiny_policy: HFPolicy) -> None:
    local = make_engine("hf", tiny_policy.model, tokenizer=tiny_policy.tokenizer)
    prompts, seeds = _prompts(tiny_policy, 5), [11, 12, 13, 14, 15]
    want = local.generate(prompts, PARAMS, seeds)
    for got, exp in zip(engines.generate(prompts, PARAMS, seeds), want):
        _same(got, exp)
    for key, (prompt, seed) in enumerate(zip(prompts, seeds)):
        engines.submit(key, prompt, PARAMS, seed)
    streamed = _drain(engines)
    for key, exp in enumerate(want):
        _same(streamed[key], exp)  # type: ignore[arg-type]


def test_weights_reach_every_worker(engines: RayEngines, tiny_dir: Path, tiny_policy: HFPolicy) -> None:
    moved = HFPolicy.from_pretrained(tiny_dir)
    with torch.no_grad():
        for p in moved.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    engines.load_weights(moved.model.state_dict().items())
    local = make_engine("hf", moved.model, tokenizer=moved.tokenizer)
    prompts, seeds = _prompts(tiny_policy, 4), [1, 2, 3, 4]  # two per worker
    for got, exp in zip(engines.generate(prompts, PARAMS, seeds), local.generate(prompts, PARAMS, seeds)):
        _same(got, exp)


def test_a_dead_worker_comes_back_with_the_latest_weights_and_its_requests_are_sampled_again(
    engines: RayEngines, ray_cluster: Any, tiny_dir: Path, tiny_policy: HFPolicy
) -> None:
    moved = HFPolicy.from_pretrained(tiny_dir)
    with torch.no_grad():
        for p in moved.model.parameters():
            p.mul_(1.1)
    engines.load_weights(moved.model.state_dict().items())
    ray_cluster.get(engines.workers[0].fail_next.remote())
    prompts, seeds = _prompts(tiny_policy, 4), [5, 6, 7, 8]
    for key in range(4):
        engines.submit(key, prompts[key], PARAMS, seeds[key])  # keys 0 and 2 go to worker 0, which dies
    done = _drain(engines)
    assert engines.restarts == 1
    local = make_engine("hf", moved.model, tokenizer=moved.tokenizer)  # the restarted worker has these weights
    for key, exp in enumerate(local.generate(prompts, PARAMS, seeds)):
        _same(done[key], exp)  # type: ignore[arg-type]


def test_a_request_whose_worker_dies_twice_is_lost_alone(
    engines: RayEngines, ray_cluster: Any, tiny_policy: HFPolicy
) -> None:
    ray_cluster.get(engines.workers[0].fail_next.remote())
    prompts = _prompts(tiny_policy, 4)
    for key in range(4):
        engines.submit(key, prompts[key], PARAMS, key)
    done: dict[int, Completion | Exception] = {}
    while engines.restarts == 0:  # the first death: worker 0 restarted, its batch queued again
        done.update(engines.poll())
    ray_cluster.get(engines.workers[0].fail_next.remote())  # it dies again on the resend
    done.update(_drain(engines))
    assert isinstance(done[0], EngineWorkerDied) and isinstance(done[2], EngineWorkerDied)
    assert isinstance(done[1], Completion) and isinstance(done[3], Completion)
    assert engines.restarts == 2


def test_a_worker_that_died_idle_never_samples_from_stale_weights(
    engines: RayEngines, ray_cluster: Any, tiny_dir: Path, tiny_policy: HFPolicy
) -> None:
    """Killed between requests, Ray restarts it from the model directory; the version check catches that,
    the driver reloads the latest weights and sends the batch again: nothing is lost or stale."""
    moved = HFPolicy.from_pretrained(tiny_dir)
    with torch.no_grad():
        for p in moved.model.parameters():
            p.mul_(0.9)
    engines.load_weights(moved.model.state_dict().items())
    old_pid = ray_cluster.get(engines.workers[0].pid.remote())
    ray_cluster.kill(engines.workers[0], no_restart=False)
    local = make_engine("hf", moved.model, tokenizer=moved.tokenizer)
    prompts, seeds = _prompts(tiny_policy, 4), [21, 22, 23, 24]
    for key in range(4):
        engines.submit(key, prompts[key], PARAMS, seeds[key])
    done = _drain(engines)
    for key, exp in enumerate(local.generate(prompts, PARAMS, seeds)):
        _same(done[key], exp)  # type: ignore[arg-type]
    assert ray_cluster.get(engines.workers[0].pid.remote()) != old_pid and engines.restarts == 1
