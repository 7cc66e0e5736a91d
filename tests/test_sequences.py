"""Token scoring without full-vocabulary logits, and with each prompt forwarded once: the same values and
gradients as the plain full-logits forward pass."""

from __future__ import annotations

import pytest
import torch

from uniapl.train import sequences
from uniapl.train.lm_head import chunked_token_logprobs, head_is_last
from uniapl.train.sequences import pack, score_tokens

# three rows share prompt A (a group), one has prompt B, and a last row repeats A (its paired demonstration)
PROMPT_A, PROMPT_B = [5, 6, 7, 8, 9], [10, 11, 12]
PROMPTS = [PROMPT_A, PROMPT_A, PROMPT_A, PROMPT_B, PROMPT_A]
COMPLETIONS = [[100, 101, 102], [103], [104, 105, 106, 107], [108, 109, 110, 111, 112, 113], [115, 116]]
TEMPERATURES = torch.tensor([0.7, 0.7, 0.7, 0.7, 1.0])


@pytest.fixture(scope="module")
def model(tiny_model):
    from uniapl.models import load_model

    model = load_model(tiny_model, "fp32")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(3.0)  # peaked logits, whose gradients are not all tiny
    return model.train()


def loss_and_grads(model, score):
    """A loss that weighs every token differently, its value, and the gradients of every parameter."""
    model.zero_grad()
    scores = score()
    weights = torch.arange(1.0, 1.0 + scores.logp.shape[1])
    loss = (scores.logp * weights).sum() + scores.pooled.sum()
    loss.backward()
    return scores, {name: p.grad.clone() for name, p in model.named_parameters()}


def full_logits(model, batch):
    return sequences._full_logits_scores(model, batch.trimmed(), TEMPERATURES, True, batch.completion_mask.shape[1])


@pytest.mark.parametrize("share_prefix", [False, True])
def test_chunked_head_and_shared_prefix_equal_the_full_logits_pass(model, share_prefix, monkeypatch):
    batch = pack(PROMPTS, COMPLETIONS, pad_id=0)
    reference, reference_grads = loss_and_grads(model, lambda: full_logits(model, batch))
    shared_calls = []
    monkeypatch.setattr(sequences, "_prefix_shared_hidden", lambda *a, f=sequences._prefix_shared_hidden: shared_calls.append(1) or f(*a))
    ours, grads = loss_and_grads(model, lambda: score_tokens(model, batch, TEMPERATURES, pool=True, share_prefix=share_prefix))
    assert bool(shared_calls) == share_prefix
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(ours.logp[mask], reference.logp[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.entropy[mask], reference.entropy[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.pooled, reference.pooled, rtol=0, atol=1e-5)
    assert ours.logp[~mask].abs().sum() == 0
    for name, grad in reference_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=0, atol=1e-5, msg=name)


def test_chunks_add_up_to_the_whole(monkeypatch):
    """Chunk boundaries change nothing: values and gradients with 3-token chunks equal one chunk."""
    import uniapl.train.lm_head as lm_head

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 16, generator=gen, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (10,), generator=gen)
    inverse_t = torch.full((10,), 1 / 0.8)
    results = []
    for elements in (10 * 50, 3 * 50):
        monkeypatch.setattr(lm_head, "CHUNK_ELEMENTS", elements)
        logp, entropy = chunked_token_logprobs(hidden, weight, targets, inverse_t)
        hidden.grad = weight.grad = None
        (logp * torch.arange(10.0)).sum().backward()
        results.append((logp.detach(), entropy, hidden.grad.clone(), weight.grad.clone()))
    logits = (hidden @ weight.T) * 1.25
    torch.testing.assert_close(results[0][0], torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_stays_close_to_fp32(model):
    batch = pack(PROMPTS, COMPLETIONS, pad_id=0)
    fp32 = score_tokens(model, batch, TEMPERATURES, share_prefix=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = score_tokens(model, batch, TEMPERATURES, share_prefix=True)
        bf16.logp.sum().backward()  # the chunked backward runs under autocast too
    mask = batch.completion_mask.bool()
    assert (bf16.logp - fp32.logp)[mask].abs().max() < 0.1


def test_a_model_with_soft_capped_logits_keeps_the_full_logits_path(model, monkeypatch):
    """The headless path would miss what a model does after its output layer (Gemma 2's soft-capping): such a
    model is detected and scored from its logits."""
    import copy

    capped = copy.deepcopy(model)
    forward = capped.forward

    def soft_capped(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = 30.0 * torch.tanh(out.logits / 30.0)
        return out

    monkeypatch.setattr(capped, "forward", soft_capped)
    assert head_is_last(model) and not head_is_last(capped)


def test_completion_logprobs_in_length_buckets_equal_each_row_alone_and_forward_fewer_slots(model):
    """Held-out scoring: rows of 2 to 120 tokens in like-length passes give each row's log-probs, in the rows' order,
    as scoring it alone does, and forward far fewer token slots than passes in the rows' order."""
    from uniapl.train.sequences import completion_logprobs

    lengths = [120, 2, 90, 3, 110, 5, 100, 4]
    prompts = [[20 + i] * (3 + i) for i in range(len(lengths))]
    completions = [[30 + (i * 7 + k) % 50 for k in range(n)] for i, n in enumerate(lengths)]
    slots: list[int] = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: slots.append(kwargs["input_ids"].numel()), with_kwargs=True)
    try:
        alone = [completion_logprobs(model, [p], [c], 0)[0] for p, c in zip(prompts, completions)]
        slots.clear()
        bucketed = completion_logprobs(model, prompts, completions, 0, batch_size=8)
        bucketed_slots = sum(slots)
        slots.clear()
        in_order = completion_logprobs(model, prompts, completions, 0, batch_size=8, by_length=False)
        in_order_slots = sum(slots)
    finally:
        hook.remove()
    assert [len(row) for row in bucketed] == lengths
    for got, want, ordered in zip(bucketed, alone, in_order):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.tensor(ordered), torch.tensor(want), rtol=0, atol=1e-5)
    assert bucketed_slots < 0.7 * in_order_slots, (bucketed_slots, in_order_slots)
