"""Per-turn rows vs ``merge_prefix`` rows for 20-turn full-history episodes.

Usage: python benchmarks/multiturn_rows.py [--quick]
Collects episodes of exactly 20 turns (random valid actions on a large keydoor grid, full chat
context), then times one forward+backward of the PPO loss over all rows both ways, asserts the
gradients are identical (episode weighting, token-mean), and prints forward tokens and wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from clew.envs.corpus import sample_texts
from clew.objectives import aggregation_weights, compute
from clew.policy import HFPolicy, TinyModelConfig, build_tiny
from clew.policy.hf import token_logprobs
from clew.rollout import Framing, RolloutConfig, ScriptedActor, Task, collect
from clew.rollout.batch import to_rows
from clew.table import TurnTable
from clew.tensors import TokenRow, pack_batch
from machine import busy_cores, describe, wait_for_quiet


def episodes(policy: HFPolicy, n_episodes: int, turns: int) -> list:
    actor = ScriptedActor("random", tokenizer=policy.tokenizer)
    cfg = RolloutConfig(group_size=n_episodes, max_turns=turns, context="full", max_prompt_tokens=100_000)
    task = Task("keydoor-v0", 0, {"width": 40, "height": 40, "max_steps": 1000})
    return collect(actor, [task], cfg, 0, Framing(policy.tokenizer, policy.chat))


def fwd_bwd(policy: HFPolicy, rows: list[TokenRow], micro: int) -> tuple[float, list[torch.Tensor], int]:
    """Loss over all rows (exact accumulation over microbatches): (seconds, grads, forward tokens)."""
    policy.model.zero_grad()
    full = pack_batch(rows, policy.pad_id)
    weights = aggregation_weights(full.rows.action_mask, "token_mean", units=full.episode_ids)
    tokens = int(full.rows.attention_mask.sum())
    start = time.perf_counter()
    for lo in range(0, len(rows), micro):
        batch = pack_batch(rows[lo : lo + micro], policy.pad_id)
        logp, _ = token_logprobs(policy.model, batch.rows.input_ids, batch.rows.attention_mask)
        loss, _ = compute("ppo_clip", logp, batch.old_logprobs, batch.advantages, batch.rows.action_mask)
        w = weights[lo : lo + micro, : logp.shape[1]].to(loss.dtype)
        (w * loss).sum().backward()
    seconds = time.perf_counter() - start
    return seconds, [p.grad.clone() for p in policy.model.parameters()], tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    n_episodes = 4 if args.quick else 16
    with tempfile.TemporaryDirectory() as tmp:
        policy = HFPolicy.from_pretrained(build_tiny(tmp, sample_texts(), TinyModelConfig()))
    table = TurnTable.from_groups(episodes(policy, n_episodes, 20))
    adv = torch.randn(table.n_turns, generator=torch.Generator().manual_seed(0)).numpy()
    per_turn, merged = to_rows(table, adv), to_rows(table, adv, merge_prefix=True)
    load = wait_for_quiet()
    t_rows, g_rows, tok_rows = fwd_bwd(policy, per_turn, micro=8)
    t_merged, g_merged, tok_merged = fwd_bwd(policy, merged, micro=2)
    for a, b in zip(g_rows, g_merged):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    print(f"machine: {describe()}; other processes: {load:.2f} cores at start, {busy_cores():.2f} after")
    print(f"{n_episodes} episodes x 20 turns, full history; gradients identical (atol 1e-5)")
    print("| rows | count | forward tokens | fwd+bwd time |")
    print("|---|---|---|---|")
    print(f"| per-turn | {len(per_turn)} | {tok_rows:,} | {t_rows:.2f} s |")
    print(f"| merge_prefix | {len(merged)} | {tok_merged:,} | {t_merged:.2f} s |")
    print(f"token ratio {tok_rows / tok_merged:.1f}x, time ratio {t_rows / t_merged:.1f}x")


if __name__ == "__main__":
    main()
