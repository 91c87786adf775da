"""Continuous batching (serving.engine.decoding) checked against transformers' own ``generate()`` one request at a time:
requests that join a running batch, leave it early, share a prompt prefix or sample beside it must get exactly the
greedy answer they would get alone. The batch runs on a copy of the model prepared for serving (packed linear
layers, the batch's attention: serving.engine.kernels); ``generate()`` runs on the model as transformers loads it. On
the real offline model (Llama architecture, rotary positions) and on a tiny GPT-2 (absolute positions; GPT-2 itself is
on the hub, which this machine cannot reach)."""

from __future__ import annotations

import functools

import pytest
import torch

from serving.engine import Sequence, kernels
from serving.engine.decoding import DecodeBatch, UnsupportedModel, check_supported

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
    return list(_alone(model, tuple(prompt_ids), max_new_tokens, eos, penalty))


@functools.cache  # the same reference answers serve every test and both batch kinds
def _alone(model, prompt_ids: tuple[int, ...], max_new_tokens: int, eos: int, penalty: float) -> tuple[int, ...]:
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
    return tuple(tokens[: tokens.index(eos)] if eos in tokens else tokens)


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
def served(model_cache):
    """A second copy of the real model, prepared the way the server prepares it."""
    from core.model_folder import load_model

    loaded = load_model(model_cache / "smollm2", "chat_template")
    kernels.prepare(loaded.model)
    return loaded


@pytest.fixture(scope="module")
def real(smollm2, served):
    from serving.engine.prompting import Prompter

    prompter = Prompter(smollm2, "Answer in one short sentence.", "{{question}}", max_input_tokens=1024)
    prompts = [prompter.encode(prompter.render(q)) for q in QUESTIONS]
    return smollm2, prompter, prompts


@pytest.fixture(params=["eager", "bucketed"])
def new_batch(request, served):
    """Batches over the served copy: eager steps, or the bucketed steps CUDA graphs replay (run eagerly here)."""

    def make(prompt_cache_bytes: int = 0) -> DecodeBatch:
        tokenizer = served.tokenizer
        bucketed = request.param == "bucketed"
        eos = {tokenizer.eos_token_id}
        return DecodeBatch(served.model, tokenizer.pad_token_id, eos, bucketed, prompt_cache_bytes)

    return make


def test_requests_joining_and_leaving_get_the_answer_they_would_get_alone(real, new_batch):
    loaded, _, prompts = real
    limits = [6, 24, 12, 24, 3]
    seqs = [greedy(ids, n) for ids, n in zip(prompts, limits, strict=True)]
    sizes = run_to_end(new_batch(), {0: seqs[:2], 2: seqs[2:4], 5: seqs[4:]})
    eos = loaded.tokenizer.eos_token_id
    for seq, ids, n in zip(seqs, prompts, limits, strict=True):
        assert seq.tokens == alone(loaded.model, ids, n, eos)
        assert seq.finish_reason == ("length" if len(seq.tokens) == n else "stop")
    assert max(sizes) == 5 and sizes[0] == 2  # the later waves joined a running batch


def test_shared_prefixes_change_no_answer(real, new_batch):
    """The question template's prefix and the chat template's, both cached: questions and chat messages arriving
    together get the answers they get with no prefix cached."""
    _, prompter, prompts = real
    chats = [prompter.encode(prompter.render_messages([{"role": "user", "content": q}])) for q in QUESTIONS[:3]]
    mixed = [prompts[0], chats[0], prompts[1], chats[1], prompts[2], chats[2]]
    plain = [greedy(ids, 16) for ids in mixed]
    run_to_end(new_batch(), {0: plain[:3], 1: plain[3:]})
    batch = new_batch()
    for prefix in prompter.shared_prefixes():
        batch.share_prefix(prefix)
    pinned = [len(ids) for ids, _ in batch.prompts.pinned]
    assert len(pinned) == 2
    prefixed = [greedy(ids, 16) for ids in mixed]
    run_to_end(batch, {0: prefixed[:3], 1: prefixed[3:]})
    assert {s.cached_tokens for s in prefixed} == set(pinned)  # each kind read its own prefix
    assert [s.tokens for s in prefixed] == [s.tokens for s in plain]


def kv_bytes_per_token(config) -> int:
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4  # float32 keys, values


def test_prompts_asked_again_or_continued_read_the_prompt_cache_and_change_no_answer(real, new_batch):
    """With a prompt cache: a prompt asked again computes only its last token, a longer prompt that starts with an
    earlier one (a chat sent again with one more turn) computes only what is new, and a new prompt computes what
    follows the shared prefix. All of them, admitted together into a running batch, get the answer
    ``generate()`` gives each alone."""
    loaded, prompter, prompts = real
    eos = loaded.tokenizer.eos_token_id
    batch = new_batch(prompt_cache_bytes=64 * 2**20)
    for prefix in prompter.shared_prefixes():
        batch.share_prefix(prefix)
    first = [greedy(ids, 8) for ids in prompts[:2]]
    run_to_end(batch, {0: first})
    assert batch.prompts.describe()["prompts"] == 2
    shared = [max(len(p) for p, _ in batch.prompts.pinned if tuple(ids[: len(p)]) == p) for ids in prompts[:2]]
    own = sum(len(ids) - n for ids, n in zip(prompts[:2], shared, strict=True))
    assert batch.prompts.recent_bytes == own * kv_bytes_per_token(loaded.model.config)  # the markup is kept once
    answer = first[0].tokens
    continued = prompts[0] + answer + prompter.encode(prompter.render(QUESTIONS[3]))[1:]
    again, longer, new, running = (
        greedy(prompts[1], 12),
        greedy(continued, 12),
        greedy(prompts[4], 12),
        greedy(prompts[2], 12),
    )
    run_to_end(batch, {0: [running], 2: [again, longer, new]})
    assert again.cached_tokens == len(prompts[1]) - 1
    assert longer.cached_tokens == len(prompts[0])
    assert 0 < new.cached_tokens < len(prompts[4]) - 1  # the shared prefix only
    for seq in (again, longer, new, running):
        assert seq.tokens == alone(loaded.model, seq.prompt_ids, 12, eos)


def test_the_prompt_cache_keeps_the_most_recent_prompts_within_its_budget(real, new_batch):
    loaded, _, prompts = real
    per_token = kv_bytes_per_token(loaded.model.config)
    budget = per_token * (len(prompts[3]) + len(prompts[4]))  # room for the last two prompts exactly
    batch = new_batch(prompt_cache_bytes=budget)
    for ids in prompts:
        run_to_end(batch, {0: [greedy(ids, 2)]})
        assert 0 < batch.prompts.recent_bytes <= budget
    assert [tokens for _, tokens in batch.prompts.recent] == [tuple(prompts[3]), tuple(prompts[4])]
    none = new_batch(prompt_cache_bytes=0)
    first, again = greedy(prompts[0], 2), greedy(prompts[0], 2)
    run_to_end(none, {0: [first], 2: [again]})
    assert none.prompts.describe()["prompts"] == 0
    assert first.cached_tokens == again.cached_tokens == 0


def test_a_dropped_row_frees_its_place_and_the_others_go_on(real, new_batch):
    loaded, _, prompts = real
    seqs = [greedy(ids, 12) for ids in prompts[:3]]
    batch = new_batch()
    batch.admit(seqs)
    batch.step()
    batch.drop([seqs[1]])
    assert batch.rows == [seqs[0], seqs[2]]  # the last row moved into the freed slot
    while len(batch):
        batch.step()
    eos = loaded.tokenizer.eos_token_id
    assert [s.tokens for s in (seqs[0], seqs[2])] == [alone(loaded.model, prompts[i], 12, eos) for i in (0, 2)]
    assert len(seqs[1].tokens) == 1 and seqs[1].finish_reason is None


def test_sampling_neighbours_do_not_change_a_greedy_answer(real, new_batch):
    loaded, _, prompts = real
    torch.manual_seed(0)
    sampled = [Sequence(prompts[i], 10, temperature=1.0, top_p=0.9, repetition_penalty=1.0) for i in (1, 2)]
    steady = greedy(prompts[0], 10)
    run_to_end(new_batch(), {0: [sampled[0], steady, sampled[1]]})
    assert steady.tokens == alone(loaded.model, prompts[0], 10, loaded.tokenizer.eos_token_id)
    vocab = loaded.model.config.vocab_size
    assert all(s.tokens and all(0 <= t < vocab for t in s.tokens) for s in sampled)


def test_streaming_callback_sees_each_token_in_order(real, new_batch):
    _, _, prompts = real
    seen: list[int] = []
    seq = Sequence(prompts[0], 8, repetition_penalty=PENALTY, on_token=seen.append)
    run_to_end(new_batch(), {0: [seq]})
    assert seen == seq.tokens and seen


def test_gpt2_absolute_positions_with_left_padding(tmp_path):
    from transformers import GPT2LMHeadModel

    from .test_model_families import build_tiny_gpt2

    folder = build_tiny_gpt2(tmp_path / "tiny")
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float64).eval()  # float64: no near-ties to flip
    served = kernels.prepare(GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float64).eval())
    eos = model.config.eos_token_id
    prompts = [[5, 17, 33, 41, 9, 12, 60], [8, 2], [70, 71, 72, 73]]
    seqs = [greedy(ids, 9) for ids in prompts]
    run_to_end(DecodeBatch(served, eos, {eos}), {0: seqs[:2], 3: seqs[2:]})
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
        check_supported(config)


def test_every_tensor_the_batch_makes_follows_the_model_device(real, served):
    """Device-agnostic, proved on a CPU: with torch's default device switched to ``meta``, any tensor the batch
    created without naming the model's device would land on ``meta`` and fail when it meets the model's tensors."""
    _, prompter, prompts = real
    seqs = [greedy(ids, 6) for ids in prompts[:3]]
    with torch.device("meta"):
        batch = DecodeBatch.for_model(served)
        for prefix in prompter.shared_prefixes():
            batch.share_prefix(prefix)
        run_to_end(batch, {0: seqs[:2], 2: seqs[2:]})
    assert all(len(s.tokens) == 6 for s in seqs)


def test_the_kv_cache_grows_when_rows_and_columns_run_out(real, served):
    _, _, prompts = real
    batch = DecodeBatch.for_model(served)
    assert batch.cache.capacity == (1, 64)
    seqs = [greedy(ids, 48) for ids in prompts]
    run_to_end(batch, {0: seqs})
    rows, columns = batch.cache.capacity
    assert rows >= len(prompts) and columns >= max(map(len, prompts)) + 48
    eos = served.tokenizer.eos_token_id
    assert seqs[0].tokens == alone(real[0].model, prompts[0], 48, eos)


JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"result": {"type": "string", "enum": ["yes", "no"]}, "rationale": {"type": "string"}},
    "required": ["result", "rationale"],
    "additionalProperties": False,
}


def test_a_json_schema_row_answers_valid_json_and_its_neighbours_are_untouched(real, new_batch):
    """Structured output is per row: the constrained row's answer parses and validates, the plain rows beside it get
    the answers they get alone."""
    import json

    from serving.engine.structured import Grammars

    loaded, prompter, prompts = real
    grammars = Grammars.for_model(loaded)
    ask = "Is Paris the capital of France? Reply in JSON with result (yes or no) and rationale."
    structured = greedy(prompter.encode(prompter.render_messages([{"role": "user", "content": ask}])), 96)
    structured.constraint = grammars.constraint(JUDGE_SCHEMA)
    plain = [greedy(prompts[0], 12), greedy(prompts[1], 12)]
    run_to_end(new_batch(), {0: [plain[0], structured, plain[1]]})
    answer = json.loads(loaded.tokenizer.decode(structured.tokens))
    assert set(answer) == {"result", "rationale"} and answer["result"] in {"yes", "no"}, answer
    assert structured.finish_reason == "stop"  # ended by the grammar, before its token limit
    eos = loaded.tokenizer.eos_token_id
    assert [s.tokens for s in plain] == [alone(loaded.model, prompts[i], 12, eos) for i in (0, 1)]


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "string", "pattern": "(?<=a)b"}, "look-around"),
        ({"$ref": "http://example.com/schema.json"}, "retriev"),
        ({"type": "strang"}, "strang"),
    ],
)
def test_a_schema_the_engine_cannot_enforce_is_refused_with_its_reason(served, schema, reason):
    from serving.engine.structured import Grammars, Unenforceable

    grammars = Grammars.for_model(served)
    with pytest.raises(Unenforceable, match=reason):
        grammars.constraint(schema)


class RefusesEverything:
    """A grammar that allows no token at all (what a schema no value satisfies leaves)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def allowed(self) -> torch.Tensor:
        return torch.zeros(self.vocab_size, dtype=torch.bool)

    def consume(self, token: int) -> bool:  # pragma: no cover - a row with nothing allowed takes no token
        raise AssertionError("a row whose grammar allows nothing took a token")


class BrokenMatcher:
    """A grammar whose matcher fails when asked what comes next."""

    def allowed(self) -> torch.Tensor:
        raise RuntimeError("matcher state lost")


# Settings the schemas accept that once failed every row decoding beside them (torch.multinomial on inf/NaN)
POISONS = {
    "temperature 1e-300": {"temperature": 1e-300},
    "temperature 2.39e-268": {"temperature": 2.391627137278296e-268},
    "top_p 5e-324": {"temperature": 1.0, "top_p": 5e-324},
    "temperature 1.5e-212, top_p 0.52, penalty 1.5": {
        "temperature": 1.5e-212,
        "top_p": 0.52,
        "repetition_penalty": 1.5,
    },
    "penalty 0.5, temperature 2": {"temperature": 2.0, "repetition_penalty": 0.5},
    "penalty 2, temperature 2": {"temperature": 2.0, "repetition_penalty": 2.0},
    "penalty 0.5, greedy": {"repetition_penalty": 0.5},
    "penalty 2, greedy": {"repetition_penalty": 2.0},
}
GREEDY_IN_PRACTICE = {  # the poisons whose settings can only pick the top token: they answer as greedy does
    "temperature 1e-300": 1.0,
    "temperature 2.39e-268": 1.0,
    "top_p 5e-324": 1.0,
    "temperature 1.5e-212, top_p 0.52, penalty 1.5": 1.5,
    "penalty 0.5, greedy": 0.5,
    "penalty 2, greedy": 2.0,
}


def test_no_row_can_fail_its_neighbours_or_change_their_answers(real, new_batch):
    """Every poisonous setting the schemas allow, a grammar that allows nothing, a grammar that breaks and logits
    that overflow (inf) or are NaN, each in its own row beside three plain rows: the plain rows get the answers they
    get alone; settings that mean greedy answer greedily; only the broken rows fail, each with its reason."""
    loaded, _, prompts = real
    torch.manual_seed(0)
    eos = loaded.tokenizer.eos_token_id
    plain = [greedy(prompts[i], 12) for i in (0, 1, 2)]
    poisoned = {name: Sequence(prompts[3], 12, **settings) for name, settings in POISONS.items()}
    refused, broken = greedy(prompts[4], 12), greedy(prompts[4], 12)
    refused.constraint, broken.constraint = RefusesEverything(loaded.model.config.vocab_size), BrokenMatcher()
    overflowing, not_a_number = greedy(prompts[3], 12), greedy(prompts[3], 12)
    rows = [plain[0], *poisoned.values(), plain[1], refused, broken, overflowing, not_a_number, plain[2]]
    batch = new_batch()
    batch.admit(rows)
    with torch.inference_mode():  # as a model whose scores overflow leaves them after its forward pass
        batch.logits[rows.index(overflowing), 7] = float("inf")
        batch.logits[rows.index(not_a_number), 11] = float("nan")
    while len(batch):
        batch.step()

    assert [s.tokens for s in plain] == [alone(loaded.model, prompts[i], 12, eos) for i in (0, 1, 2)]
    for name, penalty in GREEDY_IN_PRACTICE.items():
        assert poisoned[name].tokens == alone(loaded.model, prompts[3], 12, eos, penalty), name
    vocab = loaded.model.config.vocab_size
    for name, seq in poisoned.items():
        assert seq.error is None and seq.finish_reason in {"stop", "length"}, (name, seq.error)
        assert seq.tokens and all(0 <= t < vocab for t in seq.tokens), name
    assert (refused.finish_reason, refused.tokens, refused.error) == ("stop", [], None)
    assert broken.finish_reason == "error" and "grammar failed: matcher state lost" in broken.error
    for seq in (overflowing, not_a_number):
        assert seq.finish_reason == "error" and "not finite" in seq.error and seq.tokens == []


@pytest.fixture(scope="module")
def int8_served(model_cache):
    """The real model as the server prepares it for ``--dtype int8``: float32 weights quantized by ``prepare``."""
    from core.model_folder import load_model

    served = load_model(model_cache / "smollm2", "chat_template")
    kernels.prepare(served.model, torch.int8)
    return served


def test_an_int8_batch_answers_every_row_that_joins_and_leaves_it(real, int8_served):
    """Every row of a running int8 batch, joining late or leaving early, gets its own answer to its own limit.
    (Bit-for-bit equality with the row alone is what tests/test_quantization.py checks per product; a whole answer
    can still differ where attention's float32 sums, which vary in their last bit with the batch's columns, move a
    value across one of the quantizer's rounding steps, as they can in bfloat16.)"""
    _, _, prompts = real
    eos = int8_served.tokenizer.eos_token_id
    limits = [6, 24, 12, 24, 3]
    seqs = [greedy(ids, n) for ids, n in zip(prompts, limits, strict=True)]
    batch = DecodeBatch(int8_served.model, int8_served.tokenizer.pad_token_id, {eos})
    sizes = run_to_end(batch, {0: seqs[:2], 2: seqs[2:4], 5: seqs[4:]})
    assert max(sizes) == 5 and sizes[0] == 2
    vocab = int8_served.model.config.vocab_size
    for seq, n in zip(seqs, limits, strict=True):
        assert seq.error is None and 0 < len(seq.tokens) <= n and all(0 <= t < vocab for t in seq.tokens)
        assert seq.finish_reason == ("length" if len(seq.tokens) == n else "stop")
    described = kernels.describe(int8_served.model)
    assert "121 linear layers in int8 (weights per channel, activations per row)" in described  # 4 a layer + output
    assert any(line.startswith("lean forward pass (30 layers") for line in described)


def test_the_pyfunc_loads_int8_with_every_linear_layer_quantized(model_cache):
    from core.model_folder import load_model
    from core.quantization import Int8Linear

    loaded = load_model(model_cache / "smollm2", "chat_template", "int8")
    layers = [type(m) for m in loaded.model.modules() if isinstance(m, torch.nn.Linear | Int8Linear)]
    assert layers and set(layers) == {Int8Linear}
