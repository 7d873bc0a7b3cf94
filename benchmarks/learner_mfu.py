"""Learner efficiency: forward+backward tokens/s and model FLOPs utilisation vs measured matmul peak.

Usage: python benchmarks/learner_mfu.py [--quick]
FLOPs per token = 6 N (N = non-embedding parameters) + 12 L T d (attention, PaLM appendix B),
for the tiny model (~1 M parameters) and a ~14 M-parameter one; batch 16 x 64 tokens, fp32,
2 threads, the learner's own scoring function (``token_logprobs``) and a summed loss.
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
from clew.policy import TinyModelConfig, build_tiny
from clew.policy.hf import HFPolicy, token_logprobs
from machine import describe, wait_for_quiet

SIZES = {
    "tiny (default)": TinyModelConfig(),
    "small": TinyModelConfig(hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1536),
}


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
    """Best-of-samples fp32 matmul FLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def learner_rate(model: torch.nn.Module, batch: int, seq: int, vocab: int, steps: int) -> float:
    ids = torch.randint(2, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    best = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        logp, _ = token_logprobs(model, ids, mask)
        logp.sum().backward()
        model.zero_grad(set_to_none=True)
        best = max(best, batch * seq / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    steps = 2 if args.quick else 8
    batch, seq = 16, 64
    load = wait_for_quiet()
    peak = matmul_peak()
    print(f"machine: {describe()}; other processes {load:.2f} cores; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print("| model | parameters | non-embedding | fwd+bwd tokens/s | model FLOP/s | MFU |")
    print("|---|---|---|---|---|---|")
    for name, cfg in SIZES.items():
        with tempfile.TemporaryDirectory() as tmp:
            policy = HFPolicy.from_pretrained(build_tiny(tmp, sample_texts(20), cfg))
        model = policy.model.train()
        total = sum(p.numel() for p in model.parameters())
        non_embed = total - model.get_input_embeddings().weight.numel()
        rate = learner_rate(model, batch, seq, len(policy.tokenizer), steps)
        flops = rate * (6 * non_embed + 12 * cfg.num_layers * seq * cfg.hidden_size)
        cells = [name, f"{total / 1e6:.2f} M", f"{non_embed / 1e6:.2f} M", f"{rate:,.0f}", f"{flops / 1e9:.0f} G"]
        print("| " + " | ".join([*cells, f"{flops / peak:.0%}"]) + " |")


if __name__ == "__main__":
    main()
