"""Each row's next token, from its own logits and its own settings: nothing one row brings can reach another.

``choose(logits, rows, skip)`` gives every row of a decoding step its next token and the rows that must end with an
error instead. Per row:

- settings that mean greedy in practice are greedy (``is_greedy``): a temperature under ``GREEDY_TEMPERATURE``
  (vLLM's sampling epsilon), or a nucleus too small for any token but the top one (``top_p`` under 1/vocabulary: the
  most likely token always has at least that probability). Dividing by such a temperature overflows;
- sampling scales the row's logits less their maximum, so the best token scores 0 and nothing overflows at any
  temperature the schema allows;
- a row whose best score is not finite (NaN or infinite logits, from the model or a grammar that masked everything)
  is reported with the reason and left out of the draw, which would otherwise fail for every row of the step
  (``torch.multinomial`` refuses a batch with one bad row).

The greedy choice is ``max`` over the vocabulary (the first maximal index, as ``argmax`` and ``generate()`` pick),
which also gives each row's best score for the finiteness check at no extra cost. ``penalize`` applies each row's
repetition penalty to the tokens it has seen.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

import torch

GREEDY_TEMPERATURE = 1e-5  # below this a temperature is greedy (vLLM's _SAMPLING_EPS)
NON_FINITE = (
    "the model's scores for this answer's next token are not finite (NaN or infinity); the answer was stopped "
    "there. Retry, or serve the model in float32 if it runs in bfloat16"
)


class Settings(Protocol):
    """What a row brings to sampling (``serving.engine.Sequence``)."""

    temperature: float
    top_p: float


def is_greedy(temperature: float, top_p: float, vocab_size: int) -> bool:
    """Whether these settings can only ever pick the most likely token."""
    return temperature < GREEDY_TEMPERATURE or top_p * vocab_size < 1


def penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> None:
    """Each row's repetition penalty on the tokens it has seen (its prompt and output), in place: a positive score is
    divided by the penalty, a negative one multiplied, as transformers' ``RepetitionPenaltyLogitsProcessor`` does."""
    row, token = seen.nonzero(as_tuple=True)  # ~100 a row: 7x cheaper than a dense pass at 64 rows
    scores, factor = logits[row, token], penalty[row]
    logits[row, token] = torch.where(scores < 0, scores * factor, scores / factor)


def choose(
    logits: torch.Tensor, rows: Sequence[Settings], skip: Collection[int] = ()
) -> tuple[torch.Tensor, dict[int, str]]:
    """Each row's next token, and the rows (by index) that have none, with why. Rows in ``skip`` end anyway (their
    tokens are not looked at)."""
    best, chosen = logits.max(-1)
    finite = torch.isfinite(best)
    broken = [] if bool(finite.all()) else (~finite).nonzero().flatten().tolist()
    failed = {i: NON_FINITE for i in broken if i not in skip}
    vocab = logits.shape[-1]
    sampled = [
        i
        for i, row in enumerate(rows)
        if i not in failed and i not in skip and not is_greedy(row.temperature, row.top_p, vocab)
    ]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        settings = torch.tensor([[rows[i].temperature, rows[i].top_p] for i in sampled], device=logits.device)
        temperature, top_p = settings.T[:, :, None]
        chosen[index] = _sample(logits[index] - best[index, None], temperature, top_p)
    return chosen, failed


def _sample(shifted: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Temperature, then nucleus (top-p) filtering, then one draw per row; ``shifted`` scores the best token 0."""
    probs = torch.softmax(shifted / temperature, dim=-1)  # the best is exp(0) = 1 before normalising: the sum is >= 1
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # tokens after the nucleus (the first always stays)
    picks = torch.multinomial(sorted_probs.masked_fill(outside, 0.0), 1)
    return order.gather(-1, picks).squeeze(-1)
