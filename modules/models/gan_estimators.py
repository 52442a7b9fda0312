"""How the generator's gradient crosses the discrete tokens: the Gumbel-softmax relaxation (RelGAN) and
REINFORCE with per-token rewards and a baseline (SeqGAN, ScratchGAN). Pure torch, no Lightning.

Every generator net speaks the step protocol of modules/sampling.py:

    state = net.init_state(src, src_pad_mask, z)
    logits, state = net.step(prev_tokens, state)   # (B,) -> (B, V)

Sequences handed to the discriminator follow one layout, for real and fake alike: (B, L) with L the
generation length (max_new_tokens), words, then the end token if the sequence has one within L, then PAD;
`pad_mask` (B, L) is True after the end token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.models.gan_losses import generator_loss

from modules.data.batch import Batch
from modules.errors import ConfigError
from modules.models.configs import GameConfig
from modules.models.noise import UpdateNoise, dropout_masks

# position_banned_mask, the rule of which ids are allowed at each position, lives with the sampler and is
# importable from here too
from modules.sampling import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    position_banned_mask,
    process_logits,
    sample_from_probs,
    sampling_log_probs,
)

# Annotations name "TextGAN" as a string only: the LightningModule imports this module, never the reverse.


def after_end_mask(tokens: Tensor, eos_id: int = EOS_ID) -> Tensor:
    """(B, L) ids -> (B, L) bool, True strictly after the first end token (the end token itself is real)."""
    is_eos = tokens.eq(eos_id).long()
    return (is_eos.cumsum(dim=1) - is_eos) > 0


def fit_length(tokens: Tensor, length: int, pad_id: int = PAD_ID) -> Tensor:
    """Right-pad with PAD or cut (B, L') -> (B, length)."""
    if tokens.size(1) >= length:
        return tokens[:, :length]
    return F.pad(tokens, (0, length - tokens.size(1)), value=pad_id)


def real_for_discriminator(tgt: Tensor, length: int, pad_id: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """A batch's tgt (B, T) = BOS words EOS PAD.. -> (ids (B, length), pad_mask (B, length)) in the layout
    fake sequences have: the BOS dropped, cut or padded to the generation length. On fixed-length data
    (the oracle, length = L words) this cuts off the end token, which generated rows never have there."""
    ids = fit_length(tgt[:, 1:], length, pad_id)
    return ids, ids.eq(pad_id)


# ---------------------------------------------------------------------------------------------------------
# Gumbel-softmax (RelGAN)


def gumbel_temperature(step: int, max_temperature: float, anneal_steps: int, schedule: str) -> float:
    """RelGAN's temperature beta at generator update `step`, from 1 to `max_temperature` over `anneal_steps`.

    RelGAN multiplies, softmax(beta * (o + g)): beta is an inverse temperature, and as it grows the relaxed
    one-hots approach the hard ones (less bias, more gradient variance). Schedules (RelGAN's names):
    `exp` beta = max^(n / N); `linear` beta = 1 + (max - 1) n / N; `constant` beta = max from the start
    (RelGAN's "no" schedule). From update N on the temperature stays at max (N = 0: max from the start).
    """
    if max_temperature < 1.0:
        raise ValueError(f"max_temperature must be >= 1, got {max_temperature}")
    if schedule == "constant":
        return float(max_temperature)
    frac = min(1.0, step / anneal_steps) if anneal_steps > 0 else 1.0
    if schedule == "exp":
        return float(max_temperature ** frac)
    if schedule == "linear":
        return float(1.0 + (max_temperature - 1.0) * frac)
    raise ValueError(f"temperature schedule must be 'exp', 'linear' or 'constant', got {schedule!r}")


def sample_gumbel(shape, generator: torch.Generator | None = None, device=None, eps: float = 1e-10) -> Tensor:
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log(-torch.log(u + eps) + eps)


@dataclass
class GumbelOutput:
    onehots: Tensor  # (B, L, V) relaxed one-hots (straight-through: hard values, soft gradients); 0 after the end
    tokens: Tensor  # (B, L) the hard tokens argmax(o + g), i.e. samples at temperature 1; PAD after the end
    pad_mask: Tensor  # (B, L) True after the end token


def gumbel_unroll(net, src: Tensor, src_pad_mask: Tensor, *, length: int, min_length: int, temperature: float,
                  banned_ids: Sequence[int], z: Tensor | None = None, straight_through: bool = False,
                  generator: torch.Generator | None = None, noise: Tensor | None = None, bos_id: int = BOS_ID,
                  eos_id: int = EOS_ID, pad_id: int = PAD_ID) -> GumbelOutput:
    """Run the generator for exactly `length` steps with gradients, RelGAN style.

    At each step: o = logits with the banned ids at -inf, g ~ Gumbel(0, 1), the hard token argmax(o + g)
    (an exact sample of softmax(o)) is fed back as the next input, and softmax(beta * (o + g)) is the
    relaxed one-hot the discriminator sees. Gradients flow through the relaxed one-hots only: the fed-back
    token is discrete, as in RelGAN. Rows that have ended produce zero one-hots (padding).
    `noise` (length, B, V): the Gumbel noise g of every step, drawn beforehand (`sample_gumbel`); without it each
    step draws its own from `generator`.
    """
    B = src.size(0)
    state = net.init_state(src, src_pad_mask, z=z)
    prev = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    banned = None
    onehots, tokens, pads = [], [], []
    for t in range(length):
        logits, state = net.step(prev, state)  # (B, V)
        if banned is None:
            banned = position_banned_mask(logits.size(-1), length, min_length, banned_ids, eos_id, logits.device)
        o = process_logits(logits, banned=banned[t])  # (B, V) float32, banned at -inf
        g = sample_gumbel(o.shape, generator, o.device) if noise is None else noise[t]  # (B, V)
        perturbed = o + g  # (B, V)
        soft = torch.softmax(temperature * perturbed, dim=-1)  # (B, V)
        hard_tok = perturbed.argmax(dim=-1)  # (B,)
        if straight_through:
            hard = F.one_hot(hard_tok, soft.size(-1)).to(soft.dtype)
            soft = hard + (soft - soft.detach())  # forward: the hard one-hot; backward: the soft gradient
        soft = soft * (~finished).unsqueeze(-1).to(soft.dtype)  # ended rows are padding
        tok = hard_tok.masked_fill(finished, pad_id)
        onehots.append(soft)
        tokens.append(tok)
        pads.append(finished.clone())
        finished = finished | tok.eq(eos_id)
        prev = tok
    return GumbelOutput(torch.stack(onehots, dim=1), torch.stack(tokens, dim=1), torch.stack(pads, dim=1))


# ---------------------------------------------------------------------------------------------------------
# REINFORCE (SeqGAN / ScratchGAN)

# Losses under which D's logit is only defined up to a common shift: the RSGAN loss sees only d_real - d_fake, and
# the WGAN-GP critic's loss (d_fake - d_real plus a penalty on its input gradient) is unchanged by a constant too.
RELATIVISTIC_REWARD_LOSSES = ("rsgan", "wgan-gp")


def rewards_from_logits(logits: Tensor) -> Tensor:
    """Discriminator logits -> rewards 2 * sigmoid(logit) - 1 in (-1, 1) (ScratchGAN): increasing in the
    logit, 0 where D cannot tell, bounded whatever the loss (a WGAN critic's raw score is not).

    This is SeqGAN's reward sigmoid(D), D's probability that the sequence is real, up to an affine map: the
    constant cancels against the baseline and the factor 2 acts as a learning-rate factor."""
    return 2.0 * torch.sigmoid(logits) - 1.0


def real_logit_reference(real_logits: Tensor, real_pad: Tensor | None = None) -> Tensor:
    """What a relativistic reward subtracts: the mean discriminator output over the batch's real rows.

    real_logits (B,) sequence logits -> a scalar. real_logits (B, L) token logits (a per-token D) with real_pad
    (B, L) -> (L,): at each position the mean over the real rows that reach it; at positions no real row
    reaches (real sequences shorter than a fake one), the mean over every real token."""
    if real_logits.dim() == 1:
        return real_logits.mean()
    if real_pad is None:
        raise ValueError("token logits need the real rows' pad mask")
    valid = (~real_pad).to(real_logits.dtype)  # (B, L)
    count = valid.sum(dim=0)  # (L,)
    overall = (real_logits * valid).sum() / valid.sum().clamp(min=1.0)
    per_position = (real_logits * valid).sum(dim=0) / count.clamp(min=1.0)  # (L,)
    return torch.where(count > 0, per_position, overall)


def rewards_for_loss(loss: str, fake_logits: Tensor, real_reference: Tensor | None = None) -> Tensor:
    """REINFORCE rewards from D's logits on generated sequences, (N,) or (N, L), each a function only of what
    the D loss `loss` determines (so the reward level cannot drift where D's training leaves it free):

        standard   2 sigmoid(d) - 1      (SeqGAN / ScratchGAN; the standard loss fixes the logit's level)
        hinge      d                     (the hinge loss fixes the level too: its margins sit at -1 and +1;
                                          the raw logit is the hinge generator loss -d as a reward)
        rsgan      d - mean d(real)      (relativistic: these losses see D only up to a common shift,
        wgan-gp    d - mean d(real)       which cancels in the difference)

    real_reference: `real_logit_reference` of the batch's real rows (a scalar, or (L,) for token logits);
    needed under rsgan and wgan-gp only."""
    if loss == "standard":
        return rewards_from_logits(fake_logits)
    if loss == "hinge":
        return fake_logits
    if loss in RELATIVISTIC_REWARD_LOSSES:
        if real_reference is None:
            raise ValueError(f"the {loss} reward is relativistic: it needs the real rows' mean logit")
        return fake_logits - real_reference
    raise ValueError(f"loss must be one of standard, rsgan, hinge, wgan-gp, got {loss!r}")


def terminal_rewards(seq_rewards: Tensor, pad_mask: Tensor) -> Tensor:
    """(B,) one reward per sequence -> (B, L) placed at each row's last real position, 0 elsewhere (what a
    sequence-level discriminator gives without rollouts; discounting carries it back to earlier tokens)."""
    last = (~pad_mask).long().sum(dim=1).clamp(min=1) - 1  # (B,)
    out = torch.zeros(pad_mask.shape, dtype=seq_rewards.dtype, device=seq_rewards.device)
    return out.scatter(1, last.unsqueeze(1), seq_rewards.unsqueeze(1))


def discounted_returns(rewards: Tensor, pad_mask: Tensor, discount: float) -> Tensor:
    """R_t = r_t + discount * R_{t+1} over real positions; 0 at padding. (B, L) -> (B, L)"""
    rewards = rewards.masked_fill(pad_mask, 0.0)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.size(1) - 1, -1, -1):
        running = rewards[:, t] + discount * running
        returns[:, t] = running
    return returns.masked_fill(pad_mask, 0.0)


def update_baseline(baseline: Tensor, returns: Tensor, pad_mask: Tensor, decay: float | Tensor,
                    initialized: bool) -> Tensor:
    """One moving-average step per position: b_t <- decay_t * b_t + (1 - decay_t) * mean over rows of R_t.

    baseline: (max_len,); decay: a float, or (L,) one decay per position; positions beyond L, or where every
    row is padding, keep their value. With `initialized` False b takes the batch mean directly.
    Returns the new baseline (the caller copies it into its buffer)."""
    L = returns.size(1)
    valid = (~pad_mask).to(returns.dtype)  # (B, L)
    count = valid.sum(dim=0)  # (L,)
    mean = (returns * valid).sum(dim=0) / count.clamp(min=1.0)  # (L,)
    old = baseline[:L]
    new = mean if not initialized else decay * old + (1.0 - decay) * mean
    new = torch.where(count > 0, new, old)
    out = baseline.clone()
    out[:L] = new
    return out


def decay_for_samples(samples: Tensor | float, horizon_samples: float) -> Tensor:
    """The factor by which a moving average with a horizon of `horizon_samples` samples forgets its history
    over `samples` new samples: exp(-samples / horizon). Two updates of B samples forget exactly as much as one
    of 2 B, so the average covers the same samples at every batch size."""
    return torch.exp(-torch.as_tensor(samples, dtype=torch.float32) / horizon_samples)


def update_sample_baseline(baseline: Tensor, weight: Tensor, returns: Tensor, pad_mask: Tensor,
                           horizon_samples: float) -> tuple[Tensor, Tensor]:
    """The REINFORCE baseline: per position t, the exponentially weighted mean of every return seen so far at
    t, a return seen n samples ago (n counting the rows that reached t) weighing exp(-n / horizon_samples).

    The horizon is counted in samples, not in updates, so every batch size averages about the same number
    of samples (about `horizon_samples` in the 1 / (1 - decay) sense; Kish's effective sample size of the
    weights is about twice that, and never below one batch). The average is bias-corrected as Adam's moments
    are: `weight` (max_len,) is the total weight of the history, 0 before any (then the baseline is 0), so
    the first batches are neither shrunk towards 0 nor used to baseline themselves.

    baseline, weight: (max_len,) the buffers; returns, pad_mask: (B, L). -> (new baseline, new weight).
    The caller subtracts the baseline *before* updating it with the batch, so a baseline never depends on
    the samples it is subtracted from (at batch size 1 it would otherwise cancel every advantage)."""
    if horizon_samples <= 0:
        raise ValueError(f"the baseline horizon must be > 0 samples, got {horizon_samples}")
    L = returns.size(1)
    count = (~pad_mask).to(returns.dtype).sum(dim=0)  # (L,) rows that reach each position
    decay = decay_for_samples(count, horizon_samples).to(returns.dtype)  # (L,); 1 where no row reached t
    old_weight = weight[:L]
    new_weight = decay * old_weight + (1.0 - decay)  # (L,)
    # in the normalised average, the old mean keeps decay * w_old / w_new of the weight (0 without history)
    keep = torch.where(new_weight > 0, decay * old_weight / new_weight.clamp(min=1e-30), torch.ones_like(decay))
    new_baseline = update_baseline(baseline, returns, pad_mask, keep, initialized=True)
    out_weight = weight.clone()
    out_weight[:L] = new_weight
    return new_baseline, out_weight


@dataclass
class PolicySample:
    tokens: Tensor  # (B, L) sampled ids; PAD after the end token
    pad_mask: Tensor  # (B, L) True after the end token
    log_probs: Tensor  # (B, L) log pi(token_t | prefix) of the distribution each token was drawn from; 0 at padding


def sample_with_log_probs(net, src: Tensor, src_pad_mask: Tensor, *, length: int, min_length: int,
                          banned_ids: Sequence[int], z: Tensor | None = None,
                          generator: torch.Generator | None = None, uniforms: Tensor | None = None,
                          bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID) -> PolicySample:
    """Sample `length` tokens per row at temperature 1 and keep, with gradients, the log-probability of each
    drawn token under the very distribution it was drawn from.

    The same rules and draws as `modules.sampling.generate` (banned ids, no end token before `min_length`,
    one uniform per row and step from `generator`). Why in one pass rather than re-scoring the tokens
    afterwards with a teacher-forced forward: in train mode the generator's dropout draws new masks on every
    forward, so a re-scored log-probability belongs to another policy than the one that produced the token
    (off-policy). Here each token's log-probability comes from the forward pass (and dropout masks) that
    drew it, so the REINFORCE gradient is the exact score-function gradient of the policy that acted,
    dropout masks being part of its randomness; and the generator keeps the dropout the MLE family and the
    Gumbel estimator train with.

    `uniforms` (length, B, 1): the sampling uniforms of every step, drawn beforehand (``draw_uniforms``); then every
    step runs (no early stop once all rows have ended: the numbers are already drawn, and a loop whose length
    depends on the samples could not be vectorised over seeds).
    """
    B = src.size(0)
    state = net.init_state(src, src_pad_mask, z=z)
    prev = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    banned = None
    tokens, log_probs, pads = [], [], []
    for t in range(length):
        if uniforms is None and bool(finished.all()):  # as `generate`, stop once every row has ended
            tokens.append(torch.full_like(prev, pad_id))
            log_probs.append(log_probs[-1].new_zeros(B))
            pads.append(finished.clone())
            continue
        logits, state = net.step(prev, state)  # (B, V)
        if banned is None:
            banned = position_banned_mask(logits.size(-1), length, min_length, banned_ids, eos_id, logits.device)
        o = process_logits(logits, banned=banned[t])  # (B, V) float32, banned at -inf
        u = None if uniforms is None else uniforms[t]  # (B, 1)
        tok = sample_from_probs(torch.softmax(o.detach(), dim=-1), generator, u)  # (B,) as `generate` draws
        tok_logp = torch.log_softmax(o, dim=-1).gather(-1, tok.unsqueeze(-1)).squeeze(-1)  # (B,)
        tok = tok.masked_fill(finished, pad_id)
        tokens.append(tok)
        log_probs.append(tok_logp.masked_fill(finished, 0.0))
        pads.append(finished.clone())
        finished = finished | tok.eq(eos_id)
        prev = tok
    return PolicySample(torch.stack(tokens, dim=1), torch.stack(pads, dim=1), torch.stack(log_probs, dim=1))


def policy_log_probs(net, src: Tensor, src_pad_mask: Tensor, tokens: Tensor, pad_mask: Tensor, *,
                     min_length: int, banned_ids: Sequence[int], z: Tensor | None = None,
                     bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> Tensor:
    """Teacher-forced log pi(token_t | prefix) of given tokens (B, L) under the sampling policy (the same
    banned ids and end-token rule as `generate`), with gradients; 0 at padding. -> (B, L)

    In train mode with dropout this scores under fresh dropout masks, i.e. under another policy than the one
    that sampled the tokens; REINFORCE uses `sample_with_log_probs` instead."""
    B, L = tokens.shape
    tgt_in = torch.cat([tokens.new_full((B, 1), bos_id), tokens[:, :-1]], dim=1)  # (B, L)
    logits = net(src, src_pad_mask, tgt_in, z=z)  # (B, L, V)
    banned = position_banned_mask(logits.size(-1), L, min_length, banned_ids, eos_id, logits.device)
    logp = sampling_log_probs(logits, banned)  # (B, L, V)
    # padding holds PAD, a banned id (-inf): gather a safe id there and zero it afterwards
    safe = tokens.masked_fill(pad_mask, eos_id)
    token_logp = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, L)
    return token_logp.masked_fill(pad_mask, 0.0)


def reinforce_loss(token_log_probs: Tensor, advantages: Tensor, pad_mask: Tensor) -> Tensor:
    """Policy-gradient surrogate -mean over real tokens of A_t * log pi_t (A carries no gradient)."""
    valid = (~pad_mask).to(token_log_probs.dtype)
    return -(advantages.detach() * token_log_probs * valid).sum() / valid.sum().clamp(min=1.0)


@torch.no_grad()
def rollout_values(net, src: Tensor, src_pad_mask: Tensor, tokens: Tensor, *,
                   score_fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], num_rollouts: int,
                   min_length: int, banned_ids: Sequence[int], z: Tensor | None = None,
                   generator: torch.Generator | None = None, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
                   pad_id: int = PAD_ID) -> Tensor:
    """SeqGAN's Monte-Carlo action values: Q_t = mean over `num_rollouts` completions of the prefix
    tokens[:, :t+1] (sampled from the generator) of score_fn(completion); Q at the last position scores the
    sequence itself. -> (B, L)

    score_fn(ids (N, L), pad_mask (N, L), src (N, S), src_pad_mask (N, S)) -> (N,) rewards.
    The prefix is decoded once with the step protocol and every completion branches from the saved state
    (states are never modified in place, so branching needs no copies): about L^2 / 2 steps in all.
    """
    B, L = tokens.shape
    K = num_rollouts
    rep = lambda x: None if x is None else x.repeat(K, *([1] * (x.dim() - 1)))  # (K * B, ...), row k*B + b
    src_k, mask_k, z_k, tokens_k = rep(src), rep(src_pad_mask), rep(z), rep(tokens)
    N = K * B
    # teacher-force the sampled sequence once, keeping the state and next-token logits after each prefix
    state = net.init_state(src_k, mask_k, z=z_k)
    _, state = net.step(torch.full((N,), bos_id, dtype=torch.long, device=tokens.device), state)
    after = []  # after[t] = (logits for position t+1, state) once tokens 0..t are fed
    for t in range(L - 1):
        logits, state = net.step(tokens_k[:, t], state)
        after.append((logits, state))
    V = after[0][0].size(-1) if after else 0
    banned = position_banned_mask(V, L, min_length, banned_ids, eos_id, tokens.device) if after else None
    values = torch.zeros(B, L, device=tokens.device)
    for t in range(L - 1):
        logits, state = after[t]
        seq = tokens_k.clone()
        finished = tokens_k[:, : t + 1].eq(eos_id).any(dim=1)  # (N,) prefixes that already ended
        for i in range(t + 1, L):
            probs = torch.softmax(process_logits(logits, banned=banned[i]), dim=-1)
            tok = sample_from_probs(probs, generator).masked_fill(finished, pad_id)  # (N,)
            seq[:, i] = tok
            finished = finished | tok.eq(eos_id)
            if i + 1 < L:
                logits, state = net.step(tok, state)
        pad_mask = after_end_mask(seq, eos_id) | seq.eq(pad_id)
        values[:, t] = score_fn(seq, pad_mask, src_k, mask_k).view(K, B).mean(dim=0)
    pad_mask = after_end_mask(tokens, eos_id) | tokens.eq(pad_id)
    values[:, L - 1] = score_fn(tokens, pad_mask, src, src_pad_mask)
    return values.masked_fill(pad_mask, 0.0)



# ---------------------------------------------------------------------------------------------------------
# The estimators as objects: what TextGAN's training step calls. Each one makes the fakes its discriminator
# steps train on (`fakes`, in the form its generator update will show them) and the generator's loss of one batch
# (`generator_loss`, with its own logged extras). State an estimator keeps lives in its buffers (checkpointed:
# TextGAN holds the estimator as the child module `estimator`).


def draw_update_noise(gan: "TextGAN", batch_size: int, L: int, token_shape: tuple[int, ...],
                      token_noise: Callable, generator: torch.Generator | None = None) -> UpdateNoise:
    """The random numbers of one player update (``modules.models.noise``), in their fixed order: z, the token noise
    of the L generation steps (``token_noise(shape, generator, device)``, shape (L, B, *token_shape)), D's two
    dropout masks (drawn only while D trains and has a dropout that takes masks; a discriminator that draws its own
    dropout gets none, and draws inline), then, for a D with shuffled labels, which rows swap real and fake."""
    device = gan.device
    z = gan.latent(batch_size, generator)
    tokens = token_noise((L, batch_size, *token_shape), generator, device)
    D = gan.discriminator
    masks = None
    if D.training:
        try:
            shape = D.dropout_mask_shape(batch_size)
        except NotImplementedError:
            shape = None
        if shape is not None:
            masks = dropout_masks(2, shape, D.dropout_p, generator, device)
    swap = None
    if gan.d_config.labels == "shuffled":
        swap = torch.rand(batch_size, generator=generator, device=device) < 0.5
    return UpdateNoise(z=z, tokens=tokens, d_dropout=masks, swap=swap)


def swap_rows(real: Tensor, real_pad: Tensor, fake: Tensor, fake_pad: Tensor, swap: Tensor, vocab_size: int):
    """The rows of ``swap`` (B,) with their real and fake sequence traded (shuffled labels); real ids become
    one-hots when the fakes are relaxed one-hots (D embeds both alike). -> (real, real_pad, fake, fake_pad)"""
    if fake.dim() == 3 and real.dim() == 2:
        ids = torch.arange(vocab_size, device=real.device)  # (a comparison rather than F.one_hot: it vectorises)
        real = (real.unsqueeze(-1) == ids).to(fake.dtype) * (~real_pad).unsqueeze(-1).to(fake.dtype)
    rows = swap.view(-1, *([1] * (real.dim() - 1)))
    pads = swap.view(-1, 1)
    return (torch.where(rows, fake, real), torch.where(pads, fake_pad, real_pad),
            torch.where(rows, real, fake), torch.where(pads, real_pad, fake_pad))


class GumbelEstimator(nn.Module):
    """RelGAN's Gumbel-softmax: G is unrolled with gradients for exactly the generation length; each step's
    Gumbel-perturbed logits o + g give the hard token argmax(o + g) (fed back to G) and the relaxed one-hot
    softmax(beta (o + g)) that D reads through its embedding (one-hots @ embedding matrix). beta is
    `TextGAN.temperature` (its anneal schedule counts generator updates). D trains on the same relaxed one-hots
    (detached) against the hard one-hots of real data. Logs `train/gumbel_temperature` (the beta used).

    Randomness: `draw` gives an update's noise (z, the Gumbel noise (L, B, V) of the L steps, D's dropout masks);
    `fakes` and `generator_loss` read it (drawing it from `generator` first when none is given)."""

    name = "gumbel"

    def __init__(self, loss: str, straight_through: bool = False):
        super().__init__()
        self.loss, self.straight_through = loss, straight_through

    def draw(self, gan: "TextGAN", batch_size: int, L: int,
             generator: torch.Generator | None = None) -> UpdateNoise:
        gumbel = lambda shape, gen, device: sample_gumbel(shape, gen, device)  # noqa: E731
        return draw_update_noise(gan, batch_size, L, (gan.hparams.vocab_size,), gumbel, generator)

    def _unroll(self, gan: "TextGAN", batch: "Batch", L: int, beta: float, noise: UpdateNoise) -> GumbelOutput:
        min_len, _ = gan.generation_lengths()
        return gumbel_unroll(gan.generator, batch.src, batch.src_pad_mask, length=L, min_length=min_len,
                             temperature=beta, banned_ids=gan.banned_ids, z=noise.z,
                             straight_through=self.straight_through, noise=noise.tokens)

    def fakes(self, gan: "TextGAN", batch: "Batch", L: int, generator: torch.Generator | None = None,
              noise: UpdateNoise | None = None) -> tuple[Tensor, Tensor]:
        """-> relaxed one-hots (B, L, V), pad_mask (B, L). ``noise``: the update's (``draw``); else drawn from
        ``generator`` (the fixed-noise measurements of experiments/q1_game/game.py; None: the training RNG)."""
        noise = noise if noise is not None else self.draw(gan, len(batch), L, generator)
        out = self._unroll(gan, batch, L, gan.temperature, noise)
        return out.onehots, out.pad_mask

    def generator_loss(self, gan: "TextGAN", batch: "Batch", real: Tensor, real_pad: Tensor, L: int,
                       noise: UpdateNoise | None = None, fakes: tuple[Tensor, Tensor] | None = None
                       ) -> tuple[Tensor, dict]:
        """``fakes``: G's output for this update's noise (``fakes``, with gradients), when it is made already."""
        noise = noise if noise is not None else self.draw(gan, len(batch), L)
        onehots, pad = fakes if fakes is not None else self.fakes(gan, batch, L, noise=noise)  # (B, L, V), (B, L)
        beta = gan.temperature
        D = gan.discriminator  # its parameters are frozen by the optimizer toggle: no gradient reaches them
        d_fake = D(onehots, batch.src, batch.src_pad_mask, pad, dropout_mask=noise.d_mask(0))  # (B,)
        d_real = (D(real, batch.src, batch.src_pad_mask, real_pad, dropout_mask=noise.d_mask(1))
                  if self.loss == "rsgan" else None)
        return generator_loss(self.loss, d_real, d_fake), {"train/gumbel_temperature": beta}


class ReinforceEstimator(nn.Module):
    """REINFORCE (SeqGAN, ScratchGAN). Tokens are sampled at temperature 1 (the shared sampler's rules) and the
    policy gradient goes through the log-probabilities of the very distributions they were drawn from, kept in
    the sampling pass (`sample_with_log_probs`: a teacher-forced re-score would draw fresh dropout masks, i.e.
    score another policy). D scores the samples; the reward depends only on what the D loss determines
    (`rewards_for_loss`): 2 sigmoid(D) - 1 under `standard`, the logit under `hinge`, relativistic D(fake) - mean
    D(real rows of the batch) under `rsgan` and `wgan-gp`. Rewards come per token with a per-token D (dense,
    ScratchGAN; the relativistic mean is then per position), else one terminal reward per sequence; returns are
    discounted (`discount`); with `rollouts` > 0 each token's return is SeqGAN's Monte-Carlo value (mean reward
    of `rollouts` completions of its prefix).

    Advantage = return - baseline, the baseline (buffers `baseline`, `baseline_weight`, (max_len,)) a
    per-position, bias-corrected moving average of past returns over about `horizon_samples` samples
    (`update_sample_baseline`), 0 before any history, updated only after the batch's advantages are taken.
    Logs `train/mean_return`. Under DDP each device feeds it its local batch's returns."""

    name = "reinforce"

    def __init__(self, loss: str, max_len: int, discount: float, horizon_samples: float, rollouts: int = 0):
        super().__init__()
        self.loss, self.discount, self.horizon_samples, self.rollouts = loss, discount, horizon_samples, rollouts
        self.register_buffer("baseline", torch.zeros(max_len))  # per position
        self.register_buffer("baseline_weight", torch.zeros(max_len))  # its history's total weight, 0 = none

    @property
    def baseline_initialized(self) -> bool:
        """True once some returns have entered the baseline."""
        return bool(self.baseline_weight.gt(0).any())

    @staticmethod
    def upgrade_old_state(state: dict, prefix: str, keep: bool) -> None:
        """A state_dict from before the estimator objects (the baseline on the LightningModule as
        `reinforce_baseline` with `baseline_weight`, or older still with a `baseline_initialized` flag) -> this
        estimator's keys under `prefix`, in place; with `keep` False (not a REINFORCE model) the old keys go."""
        if "reinforce_baseline" not in state:
            return
        baseline = state.pop("reinforce_baseline")
        weight = state.pop("baseline_weight", torch.zeros_like(baseline))
        if "baseline_initialized" in state:
            weight = torch.full_like(baseline, float(bool(state.pop("baseline_initialized"))))
        if keep:
            state[prefix + "baseline"], state[prefix + "baseline_weight"] = baseline, weight

    def draw(self, gan: "TextGAN", batch_size: int, L: int,
             generator: torch.Generator | None = None) -> UpdateNoise:
        """An update's noise: z, the sampling uniforms (L, B, 1) of the L steps, D's dropout masks."""
        uniforms = lambda shape, gen, device: torch.rand(shape, generator=gen, device=device)  # noqa: E731
        return draw_update_noise(gan, batch_size, L, (1,), uniforms, generator)

    def _sample(self, gan: "TextGAN", batch: "Batch", L: int, noise: UpdateNoise) -> PolicySample:
        min_len, _ = gan.generation_lengths()
        return sample_with_log_probs(gan.generator, batch.src, batch.src_pad_mask, length=L, min_length=min_len,
                                     banned_ids=gan.banned_ids, z=noise.z, uniforms=noise.tokens)

    def fakes(self, gan: "TextGAN", batch: "Batch", L: int, generator: torch.Generator | None = None,
              noise: UpdateNoise | None = None) -> tuple[Tensor, Tensor]:
        """Samples at temperature 1 with the shared sampler's rules. -> ids (B, L), pad_mask (B, L).
        ``noise``: the update's (``draw``); else drawn from ``generator`` (fixed-noise measurements; None: the
        training RNG)."""
        noise = noise if noise is not None else self.draw(gan, len(batch), L, generator)
        with torch.no_grad():
            sample = self._sample(gan, batch, L, noise)
        return sample.tokens, sample.pad_mask

    @torch.no_grad()
    def returns(self, gan: "TextGAN", batch: "Batch", tokens: Tensor, pad: Tensor, z: Tensor | None,
                real: Tensor, real_pad: Tensor, noise: UpdateNoise | None = None) -> Tensor:
        """(B, L) the return of every sampled token; real, real_pad (B, L): the batch's real rows, which
        relativistic rewards are measured against. ``noise``: D's dropout masks of the update (the sequence
        discriminator's two calls: the samples, then the real rows)."""
        D, loss = gan.discriminator, self.loss
        src, src_mask = batch.src, batch.src_pad_mask
        per_token = D.per_token and self.rollouts == 0
        masks = (None, None) if noise is None else (noise.d_mask(0), noise.d_mask(1))
        reference = None
        if loss in RELATIVISTIC_REWARD_LOSSES:
            if per_token:
                real_logits = D.token_logits(real, src, src_mask, real_pad)  # (B, L)
            else:
                real_logits = D(real, src, src_mask, real_pad, dropout_mask=masks[1])  # (B,)
            reference = real_logit_reference(real_logits, real_pad)  # (L,) per token, else a scalar
        if self.rollouts > 0:
            min_len, _ = gan.generation_lengths()
            return rollout_values(
                gan.generator, src, src_mask, tokens, num_rollouts=self.rollouts, min_length=min_len,
                banned_ids=gan.banned_ids, z=z,
                score_fn=lambda ids, p, s, sm: rewards_for_loss(loss, D(ids, s, sm, p), reference),
            )
        if per_token:
            rewards = rewards_for_loss(loss, D.token_logits(tokens, src, src_mask, pad), reference)
            rewards = rewards.masked_fill(pad, 0.0)
        else:
            d_fake = D(tokens, src, src_mask, pad, dropout_mask=masks[0])  # (B,)
            rewards = terminal_rewards(rewards_for_loss(loss, d_fake, reference), pad)
        return discounted_returns(rewards, pad, self.discount)

    def generator_loss(self, gan: "TextGAN", batch: "Batch", real: Tensor, real_pad: Tensor, L: int,
                       noise: UpdateNoise | None = None, fakes: None = None) -> tuple[Tensor, dict]:
        if fakes is not None:
            raise ValueError("REINFORCE scores the log-probabilities of its own sampling pass: it takes no fakes")
        noise = noise if noise is not None else self.draw(gan, len(batch), L)
        # drawn with gradients: the log-probs in the loss are those of the distributions the tokens came from
        policy = self._sample(gan, batch, L, noise)
        tokens, pad = policy.tokens, policy.pad_mask  # (B, L)
        with torch.no_grad():
            returns = self.returns(gan, batch, tokens, pad, noise.z, real, real_pad, noise)  # (B, L)
            # the baseline before this batch enters it: it never depends on the samples it is subtracted from
            advantages = (returns - self.baseline[:L]).masked_fill(pad, 0.0)  # (B, L)
            baseline, weight = update_sample_baseline(self.baseline, self.baseline_weight, returns, pad,
                                                      self.horizon_samples)
            self.baseline.copy_(baseline)
            self.baseline_weight.copy_(weight)
        valid = (~pad).float()
        mean_return = (returns * valid).sum() / valid.sum().clamp(min=1.0)
        return reinforce_loss(policy.log_probs, advantages, pad), {"train/mean_return": mean_return}


def build_estimator(game: "GameConfig", max_len: int) -> nn.Module:
    """The estimator `game.estimator` names, with its settings from the game section."""
    if game.estimator == "gumbel":
        return GumbelEstimator(game.loss, game.straight_through)
    if game.estimator == "reinforce":
        return ReinforceEstimator(game.loss, max_len, game.discount, game.baseline_horizon_samples, game.rollouts)
    raise ConfigError(f"model.game.estimator must be 'gumbel' or 'reinforce', got {game.estimator!r}")
