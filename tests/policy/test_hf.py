import random
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from clew.envs.corpus import sample_texts
from clew.policy import ChatFormat, HFEngine, HFPolicy, SamplingParams, make_engine
from clew.policy.tiny import build_tokenizer
from clew.tensors import pack_rows


def engine_of(policy: HFPolicy) -> HFEngine:
    engine = make_engine("hf", policy.model, tokenizer=policy.tokenizer)
    assert isinstance(engine, HFEngine)
    return engine


def test_tokenizer_round_trips_through_auto_tokenizer(tiny_dir: Path) -> None:
    trained = build_tokenizer(sample_texts())
    loaded = AutoTokenizer.from_pretrained(tiny_dir)
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0xA0, 0x2FFF), 10])) for _ in range(30))
        ids = loaded.encode(text, add_special_tokens=False)
        assert ids == trained.encode(text, add_special_tokens=False)
        assert loaded.decode(ids) == text


def test_saved_model_loads_with_auto_classes(tiny_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.model_type == "llama"


def test_chat_format_matches_template(tiny_policy: HFPolicy) -> None:
    tok = tiny_policy.tokenizer
    chat = tiny_policy.chat
    action = tok.encode("up", add_special_tokens=False) + [tok.eos_token_id]
    ids = chat.first_segment(tok, "A") + action + chat.next_segment(tok, action, "B")
    msgs = [
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": "up"},
        {"role": "user", "content": "B"},
    ]
    rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert tok.decode(ids) == rendered


def test_generation_is_deterministic_and_logprobs_match(tiny_policy: HFPolicy) -> None:
    tok = tiny_policy.tokenizer
    prompts = [tok.encode(t, add_special_tokens=False) for t in ["hello there", "x", "Grid 5x5. You are at (1,1)."]]
    params = SamplingParams(temperature=1.0, max_new_tokens=12)
    engine = engine_of(tiny_policy)
    first = engine.generate(prompts, params, [7, 8, 9])
    again = engine.generate(prompts, params, [7, 8, 9])
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.logprobs for c in first] == [c.logprobs for c in again]
    scored = tiny_policy.logprobs([(p, c.token_ids) for p, c in zip(prompts, first)])
    for completion, lp in zip(first, scored):
        assert len(lp) == len(completion.token_ids)
        assert max(abs(a - b) for a, b in zip(lp, completion.logprobs)) < 1e-4


def test_greedy_equals_argmax_of_scoring(tiny_policy: HFPolicy) -> None:
    tok = tiny_policy.tokenizer
    prompt = tok.encode("Key: at (3,3).", add_special_tokens=False)
    out = engine_of(tiny_policy).generate([prompt], SamplingParams(temperature=0, max_new_tokens=5), [0])[0]
    ids = torch.tensor([prompt + out.token_ids])
    logits = tiny_policy.model(ids).logits[0, len(prompt) - 1 : -1]
    assert logits.argmax(-1).tolist() == out.token_ids


def test_stop_tokens_end_completions(tiny_policy: HFPolicy) -> None:
    prompt = [5, 6, 7]
    engine = engine_of(tiny_policy)
    free = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=8), [0])[0]
    stop = free.token_ids[2]
    cut = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=8, stop_token_ids=(stop,)), [0])[0]
    assert cut.finish_reason == "stop" and cut.token_ids[-1] == stop and len(cut.token_ids) <= 3


def test_pack_rows_mask_covers_exactly_the_action_tokens() -> None:
    packed = pack_rows([([1, 2, 3], [4, 5]), ([9], [8, 7, 6])], pad_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5], [9, 8, 7, 6, 0]]
    assert packed.action_mask.tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 0]]
    assert packed.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]


def test_any_hf_causal_lm_from_a_saved_folder(tmp_path: Path, tiny_dir: Path) -> None:
    """A Qwen2 model saved to disk works the same way (the 'real model by path' route)."""
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    policy = HFPolicy.from_pretrained(tmp_path)
    assert isinstance(policy.chat, ChatFormat)
    prompts = [[3, 4, 5, 6, 7], [8]]
    out = engine_of(policy).generate(prompts, SamplingParams(max_new_tokens=6), [1, 2])
    scored = policy.logprobs([(p, c.token_ids) for p, c in zip(prompts, out)])
    assert all(abs(a - b) < 1e-4 for c, lp in zip(out, scored) for a, b in zip(c.logprobs, lp))
