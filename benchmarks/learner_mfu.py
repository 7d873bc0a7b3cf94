"""Learner efficiency: forward+backward tokens/s, model FLOPs utilisation and peak memory, full logits vs
the LM head at action positions only.

Usage: python benchmarks/learner_mfu.py [--quick] [--models tiny,small,smollm2]

Batch: 16 rows x 128 tokens (``--quick``: 64), the last half of each row action tokens (a prompt and its
completion), fp32, 2 threads, a summed loss over the action tokens. Two scorings of the same batch:
- ``full``: the model's whole forward, (B, T, V) logits and log-softmax (``clew.policy.hf.token_logprobs``,
  what the learner ran before issue 27);
- ``actions``: the backbone, then the head only at action positions, in chunks
  (``clew.policy.scoring.action_logprobs``, the learner's scoring now).

Model FLOPs per step = 6 N T_all + 12 L T d T_all + 6 d V T_head (N non-embedding parameters, T_all tokens,
the attention term of PaLM appendix B, T_head the positions the head is computed at: every position for
``full``, the action tokens for ``actions``), so skipping the head never counts as speed. Peak = best of 20
fp32 matmuls at 1024^2 in the same process. Each (model, scoring) runs in its own child; peak RSS is the
child's. Models: ``tiny`` (clew's default, ~1 M), ``small`` (hidden 384, 6 layers, 14 M), ``smollm2``
(SmolLM2-135M-Instruct, vocabulary 49,152; ``clew models get smollm2-135m-instruct`` first).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, wait_for_quiet

SMALL = {"hidden_size": 384, "num_layers": 6, "num_heads": 6, "intermediate_size": 1536}
BATCH = 16


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
    """Best-of-samples fp32 matmul FLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def load(name: str, tmp: Path) -> Any:
    from clew.envs.corpus import sample_texts
    from clew.policy import TinyModelConfig, build_tiny
    from clew.policy.hf import HFPolicy

    if name == "smollm2":
        from clew.policy.models import materialize

        return HFPolicy.from_pretrained(materialize("smollm2-135m-instruct"))
    cfg = TinyModelConfig(**SMALL) if name == "small" else TinyModelConfig()
    return HFPolicy.from_pretrained(build_tiny(tmp, sample_texts(20), cfg))


def rate(model: Any, scoring: str, vocab: int, seq: int, steps: int) -> float:
    """Best fwd+bwd tokens/s over ``steps`` on one fixed batch."""
    from clew.policy.hf import token_logprobs
    from clew.policy.scoring import action_logprobs

    ids = torch.randint(2, vocab, (BATCH, seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    actions = torch.zeros(BATCH, seq)
    actions[:, seq // 2 :] = 1
    best = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        if scoring == "full":
            logp = token_logprobs(model, ids, mask)[0] * actions
        else:
            logp = action_logprobs(model, ids, mask, actions)[0]
        logp.sum().backward()
        model.zero_grad(set_to_none=True)
        best = max(best, BATCH * seq / (time.perf_counter() - start))
    return best


def child(name: str, scoring: str, seq: int, steps: int) -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        policy = load(name, Path(tmp))
    model = policy.model.train()
    cfg = model.config
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    non_embed = total - model.get_input_embeddings().weight.numel() - (0 if cfg.tie_word_embeddings else head.numel())
    tokens_per_s = rate(model, scoring, int(head.shape[0]), seq, steps)
    head_share = 1.0 if scoring == "full" else 0.5  # head positions per token
    per_token = 6 * non_embed + 12 * cfg.num_hidden_layers * seq * cfg.hidden_size
    per_token += 6 * head.shape[1] * head.shape[0] * head_share
    result = {
        "parameters": total, "non_embedding": non_embed, "vocab": int(head.shape[0]), "tokens_per_s": tokens_per_s,
        "flops": tokens_per_s * per_token, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip
    print("RESULT " + json.dumps(result))


def measure(name: str, scoring: str, seq: int, steps: int) -> dict[str, float] | None:
    wait_for_quiet()
    cmd = [sys.executable, __file__, "--child", f"{name},{scoring}", "--seq", str(seq), "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        print(f"[{name} {scoring} failed] {out.stderr[-1500:]}", file=sys.stderr)
        return None
    return dict(json.loads(lines[-1][7:]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default="tiny,small,smollm2")
    parser.add_argument("--child")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    if args.child:
        name, scoring = args.child.split(",")
        child(name, scoring, args.seq, args.steps)
        return
    seq, steps = (64, 2) if args.quick else (args.seq, args.steps)
    models = ["tiny"] if args.quick else args.models.split(",")
    torch.set_num_threads(2)
    quiet = wait_for_quiet()
    peak = matmul_peak()
    print(f"machine: {describe()}; other processes {quiet:.2f} cores; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"batch {BATCH} x {seq} tokens, half of them action tokens; best of {steps} steps\n")
    print("| model | vocab | non-embedding | scoring | fwd+bwd tokens/s | model FLOP/s | MFU | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for name in models:
        for scoring in ("full", "actions"):
            r = measure(name, scoring, seq, steps)
            if r is None:
                print(f"| {name} | | | {scoring} | failed | | | |")
                continue
            cells = [name, f"{r['vocab']:,.0f}", f"{r['non_embedding'] / 1e6:.2f} M", scoring]
            cells += [f"{r['tokens_per_s']:,.0f}", f"{r['flops'] / 1e9:.0f} G", f"{r['flops'] / peak:.0%}"]
            print("| " + " | ".join([*cells, f"{r['peak_rss_mb']:,.0f} MB"]) + " |")


if __name__ == "__main__":
    main()
