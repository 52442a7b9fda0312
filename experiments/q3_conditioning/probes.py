"""How much a trained generator's output depends on its condition and on its latent z (Q3), measured exactly
with the conditional oracle's p(y | c).

Mutual information. For a model q(y | c) and the data's condition distribution p(c), the oracle's posterior
p_O(c | y) is a variational decoder for the model's own mutual information (Barber & Agakov 2003):

    I_q(c; y)  >=  E_{c ~ p(c), y ~ q(y | c)} [ log p_O(y | c) - log p_O(y) ]  =  H(c) + E[log p_O(c | y)]

- label conditions: p_O(y) = mean_k p_O(y | k) over the K classes (the data draw them uniformly), exact;
- source conditions: p_O(y) is estimated from the true source and ``contrast - 1`` fresh sources, the InfoNCE
  bound, which is at most log(contrast).

The bound is tight when the model's samples carry the condition exactly as the oracle's do, and equals the
oracle's own I(c; y) when q = p_O: that is what ``OracleDataModule.true_mutual_information`` computes on oracle
samples with the same estimator and the same contrast size, so ``mi_fraction = mi_model / mi_oracle`` is the share
of the true dependence the model reproduces (1: all of it; 0 or below: none; a model that ignores c scores <= 0).

The model's own dependence on the condition. The bound above measures whether the samples carry the condition
*as the oracle does*; a model can depend strongly on its condition in its own way and still score low. So the
same estimator is also applied with the model's own sequence likelihood q(y | c) in place of p_O(y | c)
(``mi_self``: exact marginal over the classes for labels, a lower bound on I_q(c; y); InfoNCE over the same
contrast sources for sources). For a GAN with a latent input, q(y | c, z) is scored at the z the sample was
drawn with, for every candidate condition: the dependence on c with z held fixed, I_q(c; y | z).
``mi_self_fraction = mi_self / mi_oracle``: 1 means the model's output depends on its condition as strongly as
the data's does (0: not at all).

Condition accuracy: the fraction of samples whose most likely condition under the oracle (argmax over the K
classes, or over the true source and the contrast sources) is the one they were generated for; chance is
1 / K (1 / contrast), and the oracle's own samples give the ceiling (``oracle_accuracy``).

Output change with common random numbers. Samples are drawn with one uniform number per row and step from a
seeded generator (inverse-CDF sampling), so two draws that share the seed differ only where the two
distributions differ. Token-level Hamming distance (fraction of positions that differ) between paired samples:

- ``change_noise``: only the sampling seed changes (same c, same z): the scale of plain sampling randomness;
- ``change_z``: only z changes (same c, same seed) - GANs with ``z_dim > 0`` only;
- ``change_condition``: only the condition changes (same z, same seed), to a different condition of the split;
- ``swap_follow`` / ``swap_stick``: for the samples drawn under the swapped condition c', the fraction the
  oracle attributes to c' (the output follows the new condition) and to the original c (it ignores the swap).

Greedy outputs across z (``distinct_greedy_across_z``, models with z only; NaN without): for every condition, the
number of distinct greedy (argmax) decodings over ``z_draws`` draws of z, averaged over the conditions. Greedy
decoding removes the sampling noise, so what is left varies only with z: 1 = the output ignores z, ``z_draws`` =
every draw gives another output. The MLE-with-z control (``transformer-z``) shows what an objective that never
rewards using z leaves.
"""

from __future__ import annotations

import math

import torch

from modules.data.vocab import BOS_ID
from modules.sampling import position_banned_mask, target_log_probs

# Conditions per probe; the oracle's MI estimate uses as many samples.
DEFAULT_NUM = 500
DEFAULT_CONTRAST = 16
# z draws per condition for distinct_greedy_across_z
DEFAULT_Z_DRAWS = 8


def hamming(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean fraction of differing positions between paired rows (lengths padded to the longer one)."""
    width = max(a.size(1), b.size(1))
    a = torch.nn.functional.pad(a, (0, width - a.size(1)))
    b = torch.nn.functional.pad(b, (0, width - b.size(1)))
    return float(a.ne(b).float().mean())


@torch.no_grad()
def distinct_greedy_across_z(model, src: torch.Tensor, mask: torch.Tensor, z_draws: int, seed: int = 0) -> float:
    """Mean over the N conditions (src (N, S)) of the number of distinct greedy outputs across ``z_draws`` draws of
    z (module docstring); NaN for a model without z."""
    if z_draws < 1:
        raise ValueError(f"z_draws must be >= 1, got {z_draws}")
    n = src.size(0)
    z = model.latent(n * z_draws, torch.Generator(device=model.device).manual_seed(seed))  # (N K, z_dim)
    if z is None:
        return math.nan
    rows = src.repeat_interleave(z_draws, dim=0), mask.repeat_interleave(z_draws, dim=0)  # row i K + k: draw k of i
    tokens = model.sample(*rows, greedy=True, z=z).tokens.view(n, z_draws, -1).cpu()  # (N, K, L)
    return sum(len(set(map(tuple, outputs.tolist()))) for outputs in tokens) / n


def _draw(model, src, mask, *, z, seed):
    gen = torch.Generator(device=model.device).manual_seed(seed)
    return model.sample(src, mask, temperature=1.0, generator=gen, z=z).tokens


def _swap(dm, src: torch.Tensor, cond: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row's condition replaced by a different one: another class (labels) or another row's source."""
    if dm.condition == "label":
        K = dm.oracle_config.num_classes
        new = (cond + torch.randint(1, K, cond.shape, generator=gen)) % K
        src = torch.tensor(dm.vocab.label_ids)[new].unsqueeze(1)
        return src, new
    # a cyclic shift pairs each row with a different row's source
    return src.roll(1, dims=0), cond.roll(1, dims=0)


def _oracle_scores(dm, y: torch.Tensor, cond: torch.Tensor, contrast: list[torch.Tensor]) -> torch.Tensor:
    """(N, K) oracle log p(y | candidate) for the candidates: all classes, or [cond, *contrast] sources."""
    y = dm.to_oracle_ids(y[:, : dm.seq_len].cpu())
    if dm.condition == "label":
        K = dm.oracle_config.num_classes
        return torch.stack([dm.oracle.log_prob(y, torch.full((len(y),), k, dtype=torch.long)) for k in range(K)], 1)
    return torch.stack([dm.oracle.log_prob(y, c) for c in [cond, *contrast]], 1)


def _model_scores(model, dm, y: torch.Tensor, candidates: list[tuple[torch.Tensor, torch.Tensor]], z) -> torch.Tensor:
    """(N, K) the model's log q(y | candidate, z): teacher-forced over the L words, at the z each sample was drawn
    with, under the distribution the samples were drawn from (``modules.sampling.target_log_probs`` with the
    sampler's rule on oracle data: the banned ids everywhere and no end token within the L words)."""
    y = y[:, : dm.seq_len].to(model.device)
    tgt_in = torch.cat([torch.full((len(y), 1), BOS_ID, dtype=y.dtype, device=y.device), y[:, :-1]], 1)
    banned = position_banned_mask(len(dm.vocab), y.size(1), dm.seq_len, dm.vocab.non_output_ids, device=y.device)
    was_training = model.generator.training
    model.generator.eval()
    try:
        cols = []
        for src, mask in candidates:
            logits = model.generator(src.to(model.device), mask.to(model.device), tgt_in, z=z)  # (N, L, V)
            cols.append(target_log_probs(logits, y, banned)[0].sum(1).cpu())  # y holds words only: all scored
    finally:
        model.generator.train(was_training)
    return torch.stack(cols, 1)


def _candidates(dm, src, mask, contrast_sources) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The conditions every sample is scored under, as model inputs: all classes, or [true, *contrast] sources."""
    if dm.condition == "label":
        n = len(src)
        return [(torch.full((n, 1), lid, dtype=torch.long), torch.zeros(n, 1, dtype=torch.bool))
                for lid in dm.vocab.label_ids]
    return [(src, mask)] + [(c + dm.vocab.num_reserved, torch.zeros_like(c, dtype=torch.bool)) for c in contrast_sources]


def _mi_and_accuracy(dm, scores: torch.Tensor, cond: torch.Tensor) -> tuple[float, float, float]:
    """Pointwise MI bound (mean, standard error) and accuracy, for candidate scores (N, K)."""
    K = scores.size(1)
    true_idx = cond if dm.condition == "label" else torch.zeros(len(scores), dtype=torch.long)
    true_lp = scores.gather(1, true_idx.view(-1, 1)).squeeze(1)
    pointwise = true_lp - (torch.logsumexp(scores, 1) - math.log(K))
    accuracy = float(scores.argmax(1).eq(true_idx).float().mean())
    return float(pointwise.mean()), float(pointwise.std() / math.sqrt(len(pointwise))), accuracy


@torch.no_grad()
def condition_probes(model, dm, num: int = DEFAULT_NUM, contrast: int = DEFAULT_CONTRAST, seed: int = 0,
                     z_draws: int = DEFAULT_Z_DRAWS) -> dict:
    """Every Q3 measurement for one trained model on an oracle data module (see the module docstring)."""
    src, mask, _ = dm.conditions("test", num)
    gen = torch.Generator().manual_seed(seed)
    z_a = model.latent(num, torch.Generator(device=model.device).manual_seed(seed + 1))
    z_b = model.latent(num, torch.Generator(device=model.device).manual_seed(seed + 2))
    s_a, s_b = seed + 11, seed + 12

    y = _draw(model, src, mask, z=z_a, seed=s_a)
    out = {"change_noise": hamming(y, _draw(model, src, mask, z=z_a, seed=s_b))}
    out["change_z"] = hamming(y, _draw(model, src, mask, z=z_b, seed=s_a)) if z_a is not None else math.nan
    out["distinct_greedy_across_z"] = distinct_greedy_across_z(model, src, mask, z_draws, seed=seed + 3)
    out["greedy_z_draws"] = z_draws
    if dm.condition == "none":
        out.update(mi_model=math.nan, mi_model_se=math.nan, mi_oracle=0.0, mi_oracle_se=0.0, mi_fraction=math.nan,
                   mi_self=math.nan, mi_self_se=math.nan, mi_self_fraction=math.nan,
                   accuracy=math.nan, oracle_accuracy=math.nan, chance_accuracy=math.nan, change_condition=math.nan,
                   swap_follow=math.nan, swap_stick=math.nan)
        return out

    cond = dm.oracle_condition(src)
    contrast_sources = ([dm.sample_conditions(num, gen) for _ in range(contrast - 1)]
                        if dm.condition == "source" else [])
    mi, mi_se, acc = _mi_and_accuracy(dm, _oracle_scores(dm, y, cond, contrast_sources), cond)
    mi_self, mi_self_se, _ = _mi_and_accuracy(dm, _model_scores(model, dm, y, _candidates(dm, src, mask,
                                                                                         contrast_sources), z_a), cond)

    # the oracle's own samples, same conditions, same estimator: the ceiling
    y_oracle = dm.oracle.sample(num, gen, cond)
    _, _, oracle_acc = _mi_and_accuracy(dm, _oracle_scores(dm, y_oracle + dm.vocab.num_reserved, cond,
                                                           contrast_sources), cond)
    mi_true, mi_true_se = dm.true_mutual_information(num_samples=num, seed=seed, num_contrast=contrast)

    src_swapped, cond_swapped = _swap(dm, src, cond, gen)
    mask_swapped = torch.zeros_like(src_swapped, dtype=torch.bool) if dm.condition == "label" else mask.roll(1, 0)
    y_swapped = _draw(model, src_swapped, mask_swapped, z=z_a, seed=s_a)
    if dm.condition == "label":
        pred = _oracle_scores(dm, y_swapped, cond_swapped, []).argmax(1)
        follow, stick = pred.eq(cond_swapped), pred.eq(cond)
    else:  # candidates: the new source, the original source, then the contrast sources
        scores = _oracle_scores(dm, y_swapped, cond_swapped, [cond, *contrast_sources[:-1]])
        pred = scores.argmax(1)
        follow, stick = pred.eq(0), pred.eq(1)
    K = dm.oracle_config.num_classes if dm.condition == "label" else contrast
    out.update(
        mi_model=mi, mi_model_se=mi_se, mi_oracle=mi_true, mi_oracle_se=mi_true_se,
        mi_fraction=mi / mi_true if mi_true > 0 else math.nan,
        mi_self=mi_self, mi_self_se=mi_self_se, mi_self_fraction=mi_self / mi_true if mi_true > 0 else math.nan,
        accuracy=acc, oracle_accuracy=oracle_acc, chance_accuracy=1.0 / K,
        change_condition=hamming(y, y_swapped),
        swap_follow=float(follow.float().mean()), swap_stick=float(stick.float().mean()),
    )
    return out
