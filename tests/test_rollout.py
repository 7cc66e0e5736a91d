"""Generation: the decode loop that sheds finished rows, its stop predicate, and the seeded on-device sampler."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from uniapl.generation import SamplingParams, encode_prompts, generate, sequence_seed
from uniapl.generation.sampling import SeededSampler, gumbel_noise, row_keys, token_keys

PROMPTS = ["Say hi.", "Write a long line about the sea and the wind.", "Name a fruit.", "Count to three, slowly please.", "Why?"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    """The tiny model with a peaked output layer, and 3,000 tokens that count as EOS, so rows end early and at
    different lengths."""
    from uniapl.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_model, "fp32")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(10.0)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id] + list(range(1000, 4000))
    return model, tokenizer


@pytest.fixture(scope="module")
def untied_model(model_and_tokenizer):
    """A random model whose greedy outputs differ from prompt to prompt (the tiny model's tied embeddings make it
    repeat one token)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    _, tokenizer = model_and_tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 1.0)
    return model


def prompt_ids(tokenizer):
    return encode_prompts(tokenizer, [[{"role": "user", "content": p}] for p in PROMPTS])


def as_tuples(completions):
    return [(c.completion_ids, c.truncated) for c in completions]


def test_rows_end_at_different_lengths_and_completions_keep_their_semantics(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    eos = set(model.generation_config.eos_token_id)
    completions = generate(model, tokenizer, prompt_ids(tokenizer), SamplingParams(max_new_tokens=24),
                           seeds=[sequence_seed(1, 0, i) for i in range(len(PROMPTS))])
    lengths = {len(c.completion_ids) for c in completions}
    assert len(lengths) > 2  # the batch shed rows at several steps
    for c in completions:
        assert len(c.logprobs) == len(c.completion_ids) and all(lp <= 0 for lp in c.logprobs)
        if c.truncated:
            assert len(c.completion_ids) == 24 and not eos & set(c.completion_ids)
        else:  # ended: its EOS is its last token, and the only one
            assert c.completion_ids[-1] in eos and not eos & set(c.completion_ids[:-1])


def test_a_completion_depends_on_its_prompt_and_seed_only(model_and_tokenizer):
    """Batch invariance: the same completions whether the prompts decode together, two by two or one by one,
    and in any order."""
    model, tokenizer = model_and_tokenizer
    ids = prompt_ids(tokenizer)
    seeds = [sequence_seed(5, 2, i) for i in range(len(ids))]
    params = SamplingParams(max_new_tokens=16, temperature=0.8, top_k=50)
    together = generate(model, tokenizer, ids, params, seeds)
    assert as_tuples(generate(model, tokenizer, ids, params, seeds, batch_size=2)) == as_tuples(together)
    assert as_tuples(generate(model, tokenizer, ids, params, seeds, batch_size=1)) == as_tuples(together)
    reversed_run = generate(model, tokenizer, ids[::-1], params, seeds[::-1])
    assert as_tuples(reversed_run[::-1]) == as_tuples(together)
    for a, b in zip(together, generate(model, tokenizer, ids, params, seeds, batch_size=1)):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_greedy_decoding_equals_transformers_generate(model_and_tokenizer, untied_model, monkeypatch):
    """Shedding rows changes nothing in the rows that stay: token for token what transformers' generate gives."""
    from transformers import GenerationConfig

    _, tokenizer = model_and_tokenizer
    model = untied_model
    ids = prompt_ids(tokenizer)
    params = SamplingParams(max_new_tokens=20, do_sample=False)
    # EOS tokens that greedy decoding reaches at different steps of different rows
    free = generate(model, tokenizer, ids, params)
    eos = [tokenizer.eos_token_id] + [c.completion_ids[2 + 3 * i] for i, c in enumerate(free)]
    monkeypatch.setattr(model.generation_config, "eos_token_id", eos)
    ours = generate(model, tokenizer, ids, params)
    assert len({len(c.completion_ids) for c in ours}) > 2
    for prompt, completion in zip(ids, ours):
        config = GenerationConfig(max_new_tokens=20, do_sample=False, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        theirs = model.generate(input_ids=torch.tensor([prompt]), generation_config=config)[0, len(prompt):].tolist()
        assert completion.completion_ids == theirs
        assert completion.logprobs == []


def test_the_stop_predicate_ends_a_row_as_truncated(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = prompt_ids(tokenizer)
    seeds = [sequence_seed(3, 0, i) for i in range(len(ids))]
    params = SamplingParams(max_new_tokens=24)
    free = generate(model, tokenizer, ids, params, seeds)
    asked = []

    def stop(row: int, generated: list[int]) -> bool:
        asked.append(list(generated))
        return len(generated) >= 3 + row and generated[-1] % 2 == 0

    stopped = generate(model, tokenizer, ids, params, seeds, stop=stop, batch_size=2)  # rows keep their index across batches
    eos = set(model.generation_config.eos_token_id)
    assert any(s.truncated and len(s.completion_ids) < 24 for s in stopped)
    for row, (s, f) in enumerate(zip(stopped, free)):
        assert f.completion_ids[: len(s.completion_ids)] == s.completion_ids  # the same draws, cut where it stopped
        assert s.logprobs == pytest.approx(f.logprobs[: len(s.logprobs)], abs=1e-5)
        if s.truncated and len(s.completion_ids) < 24:
            assert stop(row, s.completion_ids) and len(s.completion_ids) >= 3 + row
        elif not s.truncated:
            assert s.completion_ids == f.completion_ids and s.completion_ids[-1] in eos
    assert not any(a[-1] in eos for a in asked)  # never asked about a row that ended


def reference_mix32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_the_noise_is_the_documented_hash_of_seed_position_and_token():
    """Pinned to a pure-Python reference: any device or process that runs the torch ops draws the same noise."""
    import math

    seed, position, tokens = sequence_seed(42, 7, 3), 5, [0, 1, 777, 49151]
    salted = reference_mix32((position + 0x85EBCA6B) & 0xFFFFFFFF)
    key = reference_mix32((seed & 0xFFFFFFFF) ^ reference_mix32(((seed >> 32) & 0xFFFFFFFF) ^ salted))
    expected = []
    for t in tokens:
        bits = reference_mix32(key ^ reference_mix32((t + 0x9E3779B9) & 0xFFFFFFFF)) >> 8
        expected.append(-math.log(-math.log((bits + 0.5) / 2**24)))
    noise = gumbel_noise(row_keys(torch.tensor([seed]), position), token_keys(49152, "cpu"))[0, tokens]
    assert noise.tolist() == pytest.approx(expected, rel=1e-6)


def truncated_softmax(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """softmax(logits / T) restricted to the top-k, then to the smallest set whose probability exceeds top_p."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    order = torch.argsort(probs, descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    kept_mass = 0.0
    renormalized = probs[order[:top_k]] / probs[order[:top_k]].sum() if top_k else probs[order]
    for rank, token in enumerate(order[: len(renormalized)].tolist()):
        keep[token] = True
        kept_mass += renormalized[rank].item()
        if kept_mass > top_p:
            break
    out = torch.where(keep, probs, 0.0)
    return out / out.sum()


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.8), (0.9, 6, 0.75)])
def test_samples_follow_the_truncated_softmax(temperature, top_k, top_p):
    """20,000 draws (rows with their own seeds, and positions) of one 10-token distribution: a chi-square test
    against softmax(logits / T) after top-k and top-p; truncated tokens are never drawn."""
    logits = torch.tensor([2.0, 1.5, 1.2, 0.8, 0.5, 0.0, -0.3, -1.0, -2.0, -4.0])
    expected = truncated_softmax(logits, temperature, top_k, top_p)
    sampler = SeededSampler(SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p))
    seeds = torch.tensor([sequence_seed(11, 0, i) for i in range(5000)])
    draws = torch.cat([sampler(logits.expand(len(seeds), -1), seeds, position)[0] for position in range(4)])
    counts = torch.bincount(draws, minlength=len(logits)).double()
    support = expected > 0
    assert counts[~support].sum() == 0
    _, p_value = chisquare(counts[support].numpy(), (expected[support] * len(draws)).numpy())
    assert p_value > 1e-3, (counts.tolist(), (expected * len(draws)).tolist())


def test_draws_at_different_positions_and_seeds_are_independent():
    """Pairs of draws (position 0 and 1 of the same seed; seeds s and s + 1) are uncorrelated: a chi-square test of
    the 4 x 4 table of two fair 4-way draws."""
    sampler = SeededSampler(SamplingParams())
    logits = torch.zeros(20000, 4)
    seeds = torch.tensor([sequence_seed(0, 0, i) for i in range(20000)])
    for first, second in [(sampler(logits, seeds, 0)[0], sampler(logits, seeds, 1)[0]),
                          (sampler(logits, seeds, 0)[0], sampler(logits, seeds + 1, 0)[0])]:
        table = torch.bincount(first * 4 + second, minlength=16).double()
        _, p_value = chisquare(table.numpy())
        assert p_value > 1e-3, table.tolist()


def test_the_compiled_engine_decodes_what_the_plain_one_does(model_and_tokenizer, untied_model, monkeypatch):
    """Static cache and torch.compile (CUDA graphs on a GPU; here inductor on the CPU): greedy and sampled outputs
    token for token the plain engine's, with rows that end at different steps, a stop predicate, and a last batch
    smaller than the others (padded to the compiled shape)."""
    _, tokenizer = model_and_tokenizer
    model = untied_model
    ids = prompt_ids(tokenizer)
    greedy = SamplingParams(max_new_tokens=20, do_sample=False)
    free = generate(model, tokenizer, ids, greedy)
    monkeypatch.setattr(model.generation_config, "eos_token_id",
                        [tokenizer.eos_token_id] + [c.completion_ids[2 + 3 * i] for i, c in enumerate(free)])
    plain = generate(model, tokenizer, ids, greedy, batch_size=3)
    assert len({len(c.completion_ids) for c in plain}) > 2
    assert as_tuples(generate(model, tokenizer, ids, greedy, batch_size=3, engine="compiled")) == as_tuples(plain)

    seeds = [sequence_seed(9, 1, i) for i in range(len(ids))]
    sampled = SamplingParams(max_new_tokens=20, temperature=0.9, top_p=0.95)
    stop = lambda row, generated: len(generated) > 4 + row and generated[-1] % 3 == 0  # noqa: E731
    plain = generate(model, tokenizer, ids, sampled, seeds, batch_size=3, stop=stop)
    compiled = generate(model, tokenizer, ids, sampled, seeds, batch_size=3, stop=stop, engine="compiled")
    assert as_tuples(compiled) == as_tuples(plain)
    for a, b in zip(compiled, plain):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
