"""GPT-2 and DialoGPT specifics on tiny random models of their architecture (the hub is unreachable here).

GPT-2 has no pad token and no chat template: the loader reuses EOS for padding (left side) and the chain uses a plain
prompt. DialoGPT ends each turn with EOS. The hub path is tested both ways: a model in the local HF cache is used as
is; a model neither cached nor reachable fails at once with what to do.
"""

from __future__ import annotations

import time

import pytest
import torch

from core.model_folder import ModelLoadError
from lifecycle.integrations import models

EOS = "<|endoftext|>"
CORPUS = [
    "What is the capital of France? Paris is the capital of France.",
    "How many days are in a week? A week has seven days.",
    "Machine learning lets computers learn patterns from data.",
] * 20


def build_tiny_gpt2(folder):
    """A 2-layer GPT-2 with a byte-level BPE tokenizer trained here: same special tokens as GPT-2, no pad token."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS]))
    tokenizer = GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    assert tokenizer.pad_token is None and not tokenizer.chat_template  # as GPT-2's own tokenizer
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    torch.manual_seed(0)  # the same weights whichever tests ran before in this worker: its answers are reproducible
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


def runtime(folder, chat_format, system="Be brief."):
    from lifecycle.integrations.chains import ChainRuntime, PromptSpec

    loaded = models.load_model(folder, chat_format)
    defaults = {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0}
    return ChainRuntime(loaded, PromptSpec("{{question}}", system), defaults)


def test_gpt2_gets_eos_as_left_pad_token(tiny_gpt2):
    loaded = models.load_model(tiny_gpt2, "plain")
    assert loaded.tokenizer.pad_token == EOS
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.model.generation_config.pad_token_id == loaded.tokenizer.eos_token_id


def test_gpt2_uses_a_plain_prompt_and_batches_uneven_questions(tiny_gpt2):
    rt = runtime(tiny_gpt2, "plain")
    assert rt.render("What is Python?") == "Be brief.\n\nWhat is Python?\nAnswer:"
    answers = rt.answer_batch(["Hi?", "What is the capital of France, the country in Europe?"])
    assert len(answers) == 2
    assert all(0 < a.tokens <= 6 for a in answers if a.text)
    single = rt.answer("Hi?")
    assert single.question == "Hi?" and single.tokens <= 6


def test_dialogpt_ends_the_user_turn_with_eos(tiny_gpt2):
    rt = runtime(tiny_gpt2, "eos_turns")
    assert rt.render("How are you?") == "How are you?" + EOS
    answer = rt.answer("How are you?")
    assert EOS not in answer.text


def test_a_base_model_asked_for_its_chat_template_says_what_to_set(tiny_gpt2):
    with pytest.raises(ModelLoadError, match=r"model\.chat_format=plain"):
        models.load_model(tiny_gpt2, "chat_template")


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


@pytest.mark.parametrize("name", ["gpt2", "dialogpt"])
def test_uncached_hub_model_without_hub_access_fails_at_once(compose_cfg, empty_hf_cache, monkeypatch, name):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: refused like an unreachable hub
    cfg = compose_cfg(f"model={name}")
    started = time.perf_counter()
    with pytest.raises(models.ModelUnavailable) as err:
        models.locate_model(cfg.model, cfg.paths.model_cache)
    elapsed = time.perf_counter() - started
    message = str(err.value)
    assert f"huggingface-cli download {cfg.model.hub_id}" in message
    assert "model=smollm2" in message
    assert elapsed < 2.0, f"took {elapsed:.1f} s to fail"


def test_offline_mode_is_honoured_without_probing(compose_cfg, empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_hub_reachable", lambda *a: pytest.fail("probed the hub in offline mode"))
    cfg = compose_cfg("model=gpt2")
    with pytest.raises(models.ModelUnavailable, match="HF_HUB_OFFLINE=1"):
        models.locate_model(cfg.model, cfg.paths.model_cache)


def test_a_cached_hub_model_is_used_without_the_network(compose_cfg, empty_hf_cache, tiny_gpt2, monkeypatch):
    import shutil

    revision = "0" * 40
    repo = empty_hf_cache / "models--gpt2"
    shutil.copytree(tiny_gpt2, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(models, "_hub_reachable", lambda *a: pytest.fail("went to the hub for a cached model"))

    cfg = compose_cfg("model=gpt2", "model.generation.max_new_tokens=4")
    loaded = models.load_for_config(cfg.model, cfg.paths.model_cache)
    assert loaded.folder == repo / "snapshots" / revision
    assert loaded.chat_format == "plain" and loaded.tokenizer.pad_token == EOS


def test_openai_messages_get_a_plain_template_on_a_model_without_one(tiny_gpt2):
    from serving.engine.prompting import Prompter

    plain = Prompter(models.load_model(tiny_gpt2, "plain"), system=None, template="{{question}}", max_input_tokens=64)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert plain.render_messages(messages) == "System: Be brief.\nUser: Hi?\nAssistant:"
    eos = Prompter(models.load_model(tiny_gpt2, "eos_turns"), system=None, template="{{question}}", max_input_tokens=64)
    assert eos.render_messages(messages) == "Hi?" + EOS


def test_a_prompt_over_the_limits_is_refused_with_the_numbers(tiny_gpt2):
    from serving.engine.prompting import Prompter, PromptTooLong

    prompter = Prompter(
        models.load_model(tiny_gpt2, "plain"), system=None, template="{{question}}", max_input_tokens=64
    )
    settings = {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0}
    assert len(prompter.sequence("What is the capital of France?", settings).prompt_ids) < 64
    with pytest.raises(PromptTooLong, match=r"at most 64"):
        prompter.sequence("Paris is the capital of France. " * 40, settings)
    prompter.max_input_tokens = 1000  # now the model's context (256 positions for this tiny GPT-2) is the limit
    with pytest.raises(PromptTooLong, match=r"context of 256 tokens"):
        prompter.sequence("Paris is the capital of France. " * 30, {**settings, "max_new_tokens": 200})
