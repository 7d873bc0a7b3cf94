"""Offline factory for clew's tiny default model: a byte-level BPE tokenizer and a small Llama LM.

Nothing is downloaded. The tokenizer is trained on the texts it is given (the trainer passes
observations and expert actions of the built-in envs, ``clew.envs.corpus``), saved with
``tokenizer_class=PreTrainedTokenizerFast`` so that ``AutoTokenizer.from_pretrained`` keeps
``tokenizer.json`` exactly as trained (the Qwen2 class would swap in its own pre-tokenizer; see
shared/reference/cpu-notes.md). The model is a ``LlamaForCausalLM`` built from a config and saved
with ``save_pretrained``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    """Size of the tiny model and tokenizer."""

    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 4096
    seed: int = 0


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with a chat template (any string encodes losslessly)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A freshly initialised Llama-architecture causal LM sized by ``cfg`` (seeded)."""
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def build_tiny(path: str | Path, texts: Iterable[str], cfg: TinyModelConfig | None = None) -> Path:
    """Build and save the tiny tokenizer (trained on ``texts``) + model at ``path``.

    ``clew.envs.corpus.sample_texts()`` gives text from the built-in envs; any strings work.
    """
    cfg = cfg or TinyModelConfig()
    path = Path(path)
    tokenizer = build_tokenizer(texts, cfg.vocab_size)
    model = build_model(cfg, tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    _force_tokenizer_class(path)
    model.save_pretrained(path)
    (path / "clew_tiny.json").write_text(json.dumps(asdict(cfg)))
    return path


def _force_tokenizer_class(path: Path) -> None:
    cfg_file = path / "tokenizer_config.json"
    data = json.loads(cfg_file.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    data["chat_template"] = CHAT_TEMPLATE
    cfg_file.write_text(json.dumps(data, indent=2))
