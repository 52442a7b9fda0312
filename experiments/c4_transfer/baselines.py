"""C4's counted baselines: classifiers on bags of words that any learned classifier must beat (issue 21 item 4).

Both read a sentence as the multiset of its token ids (the ablation's one BPE vocabulary, ``prepare_data``), so they
see exactly the tokens the learned arms see, and neither is trained by gradient tricks that could fail quietly:

- ``naive_bayes``: multinomial Naive Bayes with Laplace smoothing ``alpha`` (counted, closed form).
- ``logistic``: logistic regression on binary bag-of-words features, L2 penalty ``l2`` (per example, i.e. the loss
  is mean NLL + l2/2 * |w|^2), fitted to convergence by L-BFGS (a convex problem: one optimum, no learning rate to
  tune). Deterministic on CPU.

``baseline_rows`` fits both on the same balanced, seeded, nested subsets the learned arms get
(``transfer.balanced_subset``) and scores them on the fixed MR test split: rows of kind ``baseline``
(``method``, ``seed``, ``size``, ``n_labels``, ``accuracy``). About 136 CPU-s for the lecture grid (5 sizes x 3
seeds), mostly logistic regression on the larger subsets.
"""

from __future__ import annotations

from typing import Sequence

import torch

METHODS = ("naive_bayes", "logistic")
NB_ALPHA = 1.0  # Laplace smoothing: the textbook default, untuned (a baseline that is tuned on test is not counted)
LOGISTIC_L2 = 1e-3  # small: the bag is sparse and the subsets are small; held fixed across sizes
LOGISTIC_MAX_ITER = 100

Labelled = Sequence[tuple[int, list[int]]]


def bag_of_words(items: Labelled, vocab_size: int, binary: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """-> counts (N, V), a sparse float64 matrix (0/1 if ``binary``), and labels (N,) long. Sparse: a sentence
    holds at most ``max_len`` of the V ids, and a dense (7464, V) matrix made the fits minutes instead of seconds."""
    rows = torch.as_tensor([r for r, (_, ids) in enumerate(items) for _ in ids], dtype=torch.long)
    cols = torch.as_tensor([i for _, ids in items for i in ids], dtype=torch.long)
    x = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(len(cols), dtype=torch.float64),
                                (len(items), vocab_size), check_invariants=True).coalesce()  # (N, V), repeated ids summed
    if binary:
        x = torch.sparse_coo_tensor(x.indices(), torch.ones_like(x.values()), x.shape, check_invariants=True).coalesce()
    y = torch.as_tensor([label for label, _ in items], dtype=torch.long)  # (N,)
    return x, y


def naive_bayes(train: Labelled, test: Labelled, vocab_size: int, num_classes: int,
                alpha: float = NB_ALPHA) -> float:
    """Multinomial Naive Bayes (Laplace smoothing ``alpha``): accuracy on ``test``."""
    x, y = bag_of_words(train, vocab_size)
    onehot = torch.nn.functional.one_hot(y, num_classes).to(torch.float64)  # (N, K)
    counts = torch.sparse.mm(x.T, onehot).T  # (K, V)
    log_word = torch.log(counts + alpha) - torch.log(counts.sum(1, keepdim=True) + alpha * vocab_size)  # (K, V)
    prior = torch.bincount(y, minlength=num_classes).to(torch.float64)
    log_prior = torch.log(prior / prior.sum())  # (K,)
    xt, yt = bag_of_words(test, vocab_size)
    scores = torch.sparse.mm(xt, log_word.T) + log_prior  # (N_test, K)
    return float((scores.argmax(1) == yt).double().mean())


def logistic(train: Labelled, test: Labelled, vocab_size: int, num_classes: int, l2: float = LOGISTIC_L2,
             max_iter: int = LOGISTIC_MAX_ITER) -> float:
    """L2-penalised (multinomial) logistic regression on binary bags of words, L-BFGS from zero: accuracy on
    ``test``."""
    x, y = bag_of_words(train, vocab_size, binary=True)
    w = torch.zeros(vocab_size, num_classes, dtype=torch.float64, requires_grad=True)  # (V, K)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)  # (K,)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch.sparse.mm(x, w) + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    xt, yt = bag_of_words(test, vocab_size, binary=True)
    with torch.no_grad():
        return float(((torch.sparse.mm(xt, w) + b).argmax(1) == yt).double().mean())


def baseline_rows(train: Labelled, test: Labelled, vocab_size: int, sizes: Sequence[tuple[str, object]],
                  seeds: Sequence[int], subset) -> list[dict]:
    """Both methods at every (size, seed) on the subsets ``subset(train, n_or_None, seed)`` (the learned arms'):
    rows of kind ``baseline``. ``sizes``: (label, n or None for the whole split) pairs."""
    num_classes = 1 + max(label for label, _ in train)
    fit = {"naive_bayes": naive_bayes, "logistic": logistic}
    rows = []
    for label, n in sizes:
        for seed in seeds:
            sub = subset(train, n, seed)
            for method in METHODS:
                rows.append({"key": f"baseline__{method}__n{label}__seed{seed}", "kind": "baseline",
                             "method": method, "seed": int(seed), "size": label, "n_labels": len(sub),
                             "accuracy": fit[method](sub, test, vocab_size, num_classes), "num_test": len(test)})
    return rows
