"""
The one sampler every generator family decodes through.

Any net with the step protocol works:

    state = net.init_state(src, src_pad_mask, z=None)   # encode the condition once
    logits, state = net.step(prev_tokens, state)        # (B,) -> (B, V) logits for the next token

Decoding is batched over rows and loops over time only. Putting the net in eval mode is the caller's
job (a GAN may want to sample in train mode). `process_logits` is public so that other decoding paths
(the GAN's Gumbel-softmax relaxation) apply exactly the same banning and truncation rules.

The distribution a model samples from is its softmax with the banned ids removed and the rest renormalised
(`position_banned_mask`: the banned ids everywhere, the end token before the minimum length). Every likelihood
the package reports (NLL_test, the temperature curves, the probes, the model's entropy) and the MLE training
loss are computed under that same distribution, with `sampling_log_probs` / `target_log_probs`, so what a model
is scored and trained on is what it generates.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from modules.data.vocab import BOS_ID, EOS_ID, NULL_ID, PAD_ID, UNK_ID
from modules.errors import ConfigError
from modules.nets.categorical import sample_from_probs  # noqa: F401  (public here too)

DEFAULT_BANNED_IDS = (PAD_ID, BOS_ID, UNK_ID, NULL_ID)


@dataclass
class SampleOutput:
    tokens: Tensor  # (B, L) without the BOS; each row ends at its first EOS (included), PAD after it
    lengths: Tensor  # (B,) tokens per row, EOS and padding excluded
    ended: Tensor  # (B,) bool, True where the row emitted an EOS before max_new_tokens ran out


def banned_mask(vocab_size: int, banned_ids: Sequence[int], device=None) -> Tensor:
    """(V,) bool, True at every id that must never be produced."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    ids = list(banned_ids)
    if ids:
        if min(ids) < 0 or max(ids) >= vocab_size:
            raise ValueError(f"banned ids must lie in [0, {vocab_size}), got {ids}")
        mask[ids] = True
    return mask


def position_banned_mask(vocab_size: int, length: int, min_length: int, banned_ids: Sequence[int],
                         eos_id: int = EOS_ID, device=None) -> Tensor:
    """(L, V) bool, True where an id may not be produced at that position: the banned ids everywhere, and
    the end token before `min_length` tokens (the rule `generate` applies with min_new_tokens = min_length)."""
    base = banned_mask(vocab_size, banned_ids, device=device)  # (V,)
    mask = base.unsqueeze(0).repeat(length, 1)  # (L, V)
    mask[:min_length, eos_id] = True
    return mask


def sampling_log_probs(logits: Tensor, banned: Tensor, temperature: float = 1.0) -> Tensor:
    """(..., V) logits -> (..., V) float32 log-probabilities of the distribution `generate` draws from at this
    temperature (no top-k / top-p): banned ids at -inf, the allowed ones renormalised among themselves.

    `banned` is a bool mask broadcastable to `logits`: (V,) from `banned_mask`, or (T, V) from
    `position_banned_mask` for teacher-forced (B, T, V) logits."""
    return torch.log_softmax(process_logits(logits, temperature=temperature, banned=banned), dim=-1)


def target_log_probs(logits: Tensor, targets: Tensor, banned: Tensor,
                     temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Teacher-forced (B, T, V) logits and (B, T) targets -> (log p(target) (B, T), producible (B, T) bool)
    under `sampling_log_probs`. banned: (T, V) (or (V,)) as there.

    A target the sampler can never produce at its position (padding, UNK on text data, an early end token) has
    probability 0: `producible` is False there and its log p is set to 0, so the caller leaves it out of any
    sum (with no -inf or NaN reaching a gradient)."""
    logp = sampling_log_probs(logits, banned, temperature)  # (B, T, V)
    banned = banned.expand(logp.shape)  # (B, T, V) view
    producible = ~banned.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T), -inf where not producible
    return token_logp.masked_fill(~producible, 0.0), producible


def check_sampling_args(*, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}; for argmax decoding use greedy=True")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 (or None to disable), got {top_k}")
    if top_p is not None and not (0.0 < top_p <= 1.0):
        raise ConfigError(f"top_p must lie in (0, 1] (or None to disable), got {top_p}")


def process_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, banned: Tensor | None = None) -> Tensor:
    """Ban, scale by temperature, then truncate (top-k, then nucleus top-p). (..., V) -> (..., V) float32.

    Removed ids get -inf. `banned` is a bool mask broadcastable to `logits` (e.g. from `banned_mask`).
    Ban first, so that top-k / top-p pick among allowed ids only."""
    check_sampling_args(temperature=temperature, top_k=top_k, top_p=top_p)
    logits = logits.float()  # softmax and cumulative sums in half precision are not trustworthy
    if banned is not None:
        logits = logits.masked_fill(banned, float("-inf"))
    if temperature != 1.0:
        logits = logits / temperature
    V = logits.size(-1)
    if top_k is not None and top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))  # ties with the k-th are kept
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop an id when the ids ranked above it already hold top_p of the mass; the top id always stays
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop = drop_sorted.scatter(-1, sorted_idx, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def generate(net, src: Tensor, src_pad_mask: Tensor, *, max_new_tokens: int, min_new_tokens: int = 0,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False, z: Tensor | None = None, generator: torch.Generator | None = None,
             bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID,
             banned_ids: Sequence[int] = DEFAULT_BANNED_IDS, grad: bool = False) -> SampleOutput:
    """Decode one continuation per row of `src`.

    - banned ids (PAD, BOS, UNK, NULL by default; pass the label tokens too) are never produced;
    - EOS cannot be produced before `min_new_tokens` tokens;
    - generation stops at `max_new_tokens`: a row that has not emitted EOS by then ends without one
      (`ended` is False, its length is max_new_tokens). For exactly L tokens per row (the oracle data),
      pass min_new_tokens = max_new_tokens = L;
    - `greedy=True` takes the argmax after banning; temperature/top-k/top-p are then irrelevant;
    - `generator` (on the same device as the logits) makes sampling reproducible: same seed, same samples
      (for the same batch size and call sequence);
    - runs under torch.no_grad() unless grad=True.
    """
    check_sampling_args(temperature=temperature, top_k=top_k, top_p=top_p)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if min_new_tokens < 0:
        raise ValueError(f"min_new_tokens must be >= 0, got {min_new_tokens}")
    if min_new_tokens > max_new_tokens:
        raise ValueError(f"min_new_tokens ({min_new_tokens}) must not exceed max_new_tokens ({max_new_tokens})")
    if eos_id in banned_ids:
        raise ValueError("eos_id must not be banned; to forbid early stops use min_new_tokens")

    B = src.size(0)
    with torch.set_grad_enabled(grad):
        state = net.init_state(src, src_pad_mask, z=z)
        prev = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
        finished = torch.zeros(B, dtype=torch.bool, device=src.device)
        lengths = torch.zeros(B, dtype=torch.long, device=src.device)
        base_banned = None
        out = []
        for i in range(max_new_tokens):
            logits, state = net.step(prev, state)  # (B, V)
            if base_banned is None:  # the vocabulary size is only known from the first logits
                base_banned = banned_mask(logits.size(-1), banned_ids, device=logits.device)
                banned_with_eos = base_banned.clone()
                banned_with_eos[eos_id] = True
                if min_new_tokens > 0 and banned_with_eos.all():
                    raise ValueError("banned_ids leave only EOS, yet min_new_tokens > 0 forbids it")
                if generator is not None and generator.device.type != logits.device.type:
                    raise ValueError(f"generator is on {generator.device}, logits on {logits.device}: "
                                     "create the generator on the net's device")
            banned = banned_with_eos if i < min_new_tokens else base_banned
            if greedy:
                next_tok = logits.float().masked_fill(banned, float("-inf")).argmax(dim=-1)  # (B,)
            else:
                logits = process_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, banned=banned)
                next_tok = sample_from_probs(torch.softmax(logits, dim=-1), generator)  # (B,)
            next_tok = next_tok.masked_fill(finished, pad_id)  # rows already done only pad
            out.append(next_tok)
            is_eos = next_tok == eos_id
            lengths += (~finished & ~is_eos).long()
            finished = finished | is_eos
            prev = next_tok  # finished rows feed PAD; their logits are never used
            if bool(finished.all()):
                break
        tokens = torch.stack(out, dim=1)  # (B, L)
    return SampleOutput(tokens=tokens, lengths=lengths, ended=finished)


def pad_and_concat(outputs: Sequence[SampleOutput], pad_id: int = PAD_ID) -> SampleOutput:
    """Join SampleOutputs of different lengths L along the batch, right-padding with pad_id."""
    L = max(o.tokens.size(1) for o in outputs)
    tokens = [torch.nn.functional.pad(o.tokens, (0, L - o.tokens.size(1)), value=pad_id) for o in outputs]
    return SampleOutput(
        tokens=torch.cat(tokens, dim=0),
        lengths=torch.cat([o.lengths for o in outputs], dim=0),
        ended=torch.cat([o.ended for o in outputs], dim=0),
    )


def generate_in_batches(net, condition: Tensor, num_samples: int, batch_size: int, *,
                        condition_pad_mask: Tensor | None = None, z: Tensor | None = None,
                        progress: bool = False, desc: str = "sampling", pad_id: int = PAD_ID,
                        **generate_kwargs) -> SampleOutput:
    """Make `num_samples` samples in chunks of `batch_size` (e.g. 10,000 oracle samples).

    condition: (S,) or (1, S) one condition shared by every sample (a NULL token, a label token, a
        sentence), or (num_samples, S) one condition per sample;
    condition_pad_mask: same leading shape, True at padding; default `condition == pad_id`;
    z: (num_samples, z_dim) latents for a net with z_dim > 0, sliced chunk by chunk;
    generate_kwargs: passed on to `generate` (max_new_tokens, temperature, generator, ...).
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}")
    if condition.dim() == 1:
        condition = condition.unsqueeze(0)
    if condition_pad_mask is None:
        condition_pad_mask = condition == pad_id
    elif condition_pad_mask.dim() == 1:
        condition_pad_mask = condition_pad_mask.unsqueeze(0)
    if condition.size(0) not in (1, num_samples):
        raise ValueError(f"condition must have 1 or num_samples={num_samples} rows, got {condition.size(0)}")
    if z is not None and z.size(0) != num_samples:
        raise ValueError(f"z must have num_samples={num_samples} rows, got {z.size(0)}")

    starts = range(0, num_samples, batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=desc, unit="batch")
    outputs = []
    for start in starts:
        n = min(batch_size, num_samples - start)
        if condition.size(0) == 1:
            src, mask = condition.expand(n, -1), condition_pad_mask.expand(n, -1)
        else:
            src, mask = condition[start:start + n], condition_pad_mask[start:start + n]
        z_chunk = None if z is None else z[start:start + n]
        outputs.append(generate(net, src, mask, z=z_chunk, pad_id=pad_id, **generate_kwargs))
    return pad_and_concat(outputs, pad_id=pad_id)
