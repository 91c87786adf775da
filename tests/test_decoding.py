"""Continuous batching (serving.decoding) checked against transformers' own ``generate()`` one request at a time:
requests that join a running batch, leave it early, share a prompt prefix or sample beside it must get exactly the
greedy answer they would get alone. On the real offline model (Llama architecture, rotary positions) and on a tiny
GPT-2 (absolute positions; GPT-2 itself is on the hub, which this machine cannot reach)."""

from __future__ import annotations

import pytest
import torch

from serving.decoding import DecodeBatch, UnsupportedModel, new_cache
from serving.engine import Sequence

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "How many days are there in a week?",
    "What is photosynthesis?",
    "What is Python?",
]
PENALTY = 1.1


def alone(model, prompt_ids: list[int], max_new_tokens: int, eos: int, penalty: float = PENALTY) -> list[int]:
    """The answer transformers' generate() gives this prompt on its own (greedy), without the end token."""
    ids = torch.tensor([prompt_ids])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        repetition_penalty=penalty,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    tokens = out[0, ids.shape[1] :].tolist()
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def greedy(ids: list[int], max_new_tokens: int) -> Sequence:
    return Sequence(prompt_ids=ids, max_new_tokens=max_new_tokens, repetition_penalty=PENALTY)


def run_to_end(batch: DecodeBatch, waves: dict[int, list[Sequence]]) -> list[int]:
    """Admit ``waves[k]`` before step k; step until every row finished. Returns the batch size at each step."""
    sizes, step = [], 0
    while len(batch) or any(k >= step for k in waves):
        batch.admit(waves.get(step, []))
        if len(batch):
            sizes.append(len(batch))
            batch.step()
        step += 1
    return sizes


@pytest.fixture(scope="module")
def real(smollm2):
    from serving.prompting import Prompter

    prompter = Prompter(smollm2, "Answer in one short sentence.", "{{question}}", max_input_tokens=1024)
    prompts = [prompter.encode(prompter.render(q)) for q in QUESTIONS]
    return smollm2, prompter, prompts


def new_batch(loaded) -> DecodeBatch:
    tokenizer = loaded.tokenizer
    return DecodeBatch(loaded.model, tokenizer.pad_token_id, {tokenizer.eos_token_id})


def test_requests_joining_and_leaving_get_the_answer_they_would_get_alone(real):
    loaded, _, prompts = real
    limits = [6, 24, 12, 24, 3]
    seqs = [greedy(ids, n) for ids, n in zip(prompts, limits, strict=True)]
    sizes = run_to_end(new_batch(loaded), {0: seqs[:2], 2: seqs[2:4], 5: seqs[4:]})
    eos = loaded.tokenizer.eos_token_id
    for seq, ids, n in zip(seqs, prompts, limits, strict=True):
        assert seq.tokens == alone(loaded.model, ids, n, eos)
        assert seq.finish_reason == ("length" if len(seq.tokens) == n else "stop")
    assert max(sizes) == 5 and sizes[0] == 2  # the later waves joined a running batch


def test_a_shared_prefix_changes_no_answer(real):
    loaded, prompter, prompts = real
    plain = [greedy(ids, 16) for ids in prompts]
    run_to_end(new_batch(loaded), {0: plain[:3], 1: plain[3:]})
    batch = new_batch(loaded)
    batch.share_prefix(prompter.shared_prefix())
    prefixed = [greedy(ids, 16) for ids in prompts]
    assert all(batch._shares_prefix(seq) for seq in prefixed)
    run_to_end(batch, {0: prefixed[:3], 1: prefixed[3:]})
    assert [s.tokens for s in prefixed] == [s.tokens for s in plain]


def test_a_dropped_row_frees_its_place_and_the_others_go_on(real):
    loaded, _, prompts = real
    seqs = [greedy(ids, 12) for ids in prompts[:3]]
    batch = new_batch(loaded)
    batch.admit(seqs)
    batch.step()
    batch.drop([seqs[1]])
    assert len(batch) == 2 and batch.mask.shape[0] == 2
    while len(batch):
        batch.step()
    eos = loaded.tokenizer.eos_token_id
    assert [s.tokens for s in (seqs[0], seqs[2])] == [alone(loaded.model, prompts[i], 12, eos) for i in (0, 2)]
    assert len(seqs[1].tokens) == 1 and seqs[1].finish_reason is None


def test_sampling_neighbours_do_not_change_a_greedy_answer(real):
    loaded, _, prompts = real
    torch.manual_seed(0)
    sampled = [Sequence(prompts[i], 10, temperature=1.0, top_p=0.9, repetition_penalty=1.0) for i in (1, 2)]
    steady = greedy(prompts[0], 10)
    run_to_end(new_batch(loaded), {0: [sampled[0], steady, sampled[1]]})
    assert steady.tokens == alone(loaded.model, prompts[0], 10, loaded.tokenizer.eos_token_id)
    vocab = loaded.model.config.vocab_size
    assert all(s.tokens and all(0 <= t < vocab for t in s.tokens) for s in sampled)


def test_streaming_callback_sees_each_token_in_order(real):
    loaded, _, prompts = real
    seen: list[int] = []
    seq = Sequence(prompts[0], 8, repetition_penalty=PENALTY, on_token=seen.append)
    run_to_end(new_batch(loaded), {0: [seq]})
    assert seen == seq.tokens and seen


def test_gpt2_absolute_positions_with_left_padding(tmp_path):
    from transformers import GPT2LMHeadModel

    from .test_model_families import build_tiny_gpt2

    folder = build_tiny_gpt2(tmp_path / "tiny")
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float64).eval()  # float64: no near-ties to flip
    eos = model.config.eos_token_id
    prompts = [[5, 17, 33, 41, 9, 12, 60], [8, 2], [70, 71, 72, 73]]
    seqs = [greedy(ids, 9) for ids in prompts]
    run_to_end(DecodeBatch(model, eos, {eos}), {0: seqs[:2], 3: seqs[2:]})
    assert [s.tokens for s in seqs] == [alone(model, ids, 9, eos) for ids in prompts]


def test_sliding_window_models_are_refused_with_a_reason():
    from transformers import MistralConfig

    config = MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=8,
    )
    with pytest.raises(UnsupportedModel, match="sliding-window"):
        new_cache(config)
