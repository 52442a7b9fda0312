"""The one measure of learning, J, and the counted baselines every verdict table prints beside the models.

J: the symmetrised KL divergence between the oracle p and a model q, per token (nats):

    J = KL(p || q) + KL(q || p)
      = (NLL_test - H(p))  +  (NLL_oracle - H(q))

- KL(p || q) = NLL_test - H(p): the model's NLL of held-out oracle data minus the oracle's own entropy
  (``OracleDataModule.entropy_per_token``, estimated from the oracle's samples). Coverage: a model that misses
  part of the data pays here.
- KL(q || p) = NLL_oracle - H(q): the oracle's NLL of the model's samples minus the model's own entropy (the
  row's ``model_entropy_per_token``: the model's NLL of its own samples). Quality: a model that writes what the
  oracle would not pays here. Subtracting H(q) is what stops a model from buying a low NLL_oracle by sharpening
  (lowering its temperature): NLL_oracle alone rewards a model that repeats the oracle's likeliest sentence.

Learning = J of the untrained model minus J of the trained one (``learning``). J is defined on oracle data only
(it needs the oracle's likelihood); on real text every quantity built on it is "not available".

Counted baselines, fitted on the training split once per data config and cached in the run folder
(``RUN_DIR/baselines/<data key>.json``):

- ``unigram``: q(w) = (count(w) + k) / (N + k V) over the words the samplers may produce (banned ids - PAD, BOS,
  UNK, NULL, labels, and EOS on the fixed-length oracle data - get no mass, as in every sampler);
- ``bigram``: q(w | previous word, or the start for the first word) with the same add-k smoothing;
- ``unigram_tempered``: the unigram at temperatures T, q_T(w) proportional to q(w)^(1/T) - the temperature curve
  a model that learned nothing but word frequencies traces (Q4's floor);

k is chosen from ``SMOOTHING_GRID`` to minimise J with its NLL part measured on the validation split: the
strongest counted baseline by the verdicts' own measure. Each baseline gets an exact NLL_test (on the whole test
split) and entropy (the bigram's by propagating its state distribution over the L positions), an NLL_oracle from
``NUM_SAMPLES`` seeded samples scored by the oracle under the test split's conditions (with its standard error),
and J. The baselines ignore the condition, so on conditional data they are what a model that ignores it can reach.

A family is *usable* where the interval of its J lies below the bigram's (``usable``): without that, its failure or
success in any comparison says nothing about its objective, only that it has not learned more than word pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Optional, Sequence

from experiments.core.datamodules import build_datamodule
from experiments.core.families import get_arg
from experiments.core.results import atomic_write_text
from experiments.core.stats import Interval, finite, t_interval
from modules.errors import ConfigError
from modules.nets.categorical import sample_from_probs

SMOOTHING_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
NUM_SAMPLES = 4000  # baseline samples scored by the oracle, per baseline and temperature
ENTROPY_SAMPLES = 10_000  # oracle samples behind H(p)
SAMPLE_SEED = 0
FORMAT_VERSION = 1


# ---- J from a results row ------------------------------------------------------------------------------------


def j_parts(row: dict, stage: str = "final") -> Optional[dict]:
    """{kl_pq, kl_qp, j} of a row at ``stage`` (``init`` or ``final``), or None where a part is missing.

    Needs the row's ``<stage>.nll_test_per_token``, ``<stage>.nll_oracle_per_token`` and
    ``<stage>.model_entropy_per_token``, and ``reference.oracle_entropy_per_token`` (attached from the cached
    baselines by ``attach_references``).
    """
    h_oracle = get_arg(row, "reference.oracle_entropy_per_token")
    nll_test, nll_oracle = get_arg(row, f"{stage}.nll_test_per_token"), get_arg(row, f"{stage}.nll_oracle_per_token")
    h_model = get_arg(row, f"{stage}.model_entropy_per_token")
    if not all(finite(v) for v in (h_oracle, nll_test, nll_oracle, h_model)):
        return None
    kl_pq, kl_qp = nll_test - h_oracle, nll_oracle - h_model
    return {"kl_pq": kl_pq, "kl_qp": kl_qp, "j": kl_pq + kl_qp}


def j_score(row: dict, stage: str = "final") -> Optional[float]:
    parts = j_parts(row, stage)
    return parts["j"] if parts else None


def learning(row: dict) -> Optional[float]:
    """Drop in J from the untrained to the trained model (nats/token; positive: it learned)."""
    a, b = j_score(row, "init"), j_score(row, "final")
    return a - b if a is not None and b is not None else None


def missing_j_reason(rows: Sequence[dict]) -> str:
    """Why J cannot be computed for these rows (for a "not available" cell)."""
    if not rows:
        return "no runs"
    r = rows[0]
    if get_arg(r, "reference.oracle_entropy_per_token") is None:
        return "J needs the oracle (oracle data) and its entropy"
    if get_arg(r, "final.model_entropy_per_token") is None:
        return "the rows lack model_entropy_per_token (the evaluation does not record it yet)"
    return "J is not finite (diverged runs)"


def usable(rows: Sequence[dict]) -> tuple[Optional[bool], str, Interval]:
    """Is the family of ``rows`` (one cell: one family and batch size, several seeds) better than counting word
    pairs? (True/False/None for unknown, the reason with the gate's margin, the interval of its final J over seeds).

    Usable: the upper bound of the 95% t-interval of its final J over seeds lies below the counted bigram's J on
    the same data (the gate of issue 19; its margin, bigram J - upper bound, is in the reason). Not usable
    otherwise: the interval reaches the bigram (False when it lies wholly at or above it, None when it straddles
    it: not shown to be better). Unknown (None) where J is not available. A family must be usable (True) to enter a
    verdict.
    """
    iv = t_interval(j_score(r) for r in rows)
    bigram = get_arg(rows[0], "reference.bigram.j") if rows else None
    if iv.n == 0 or not finite(bigram):
        return None, missing_j_reason(rows) if iv.n == 0 else "no bigram baseline for these data", iv
    who = "GAN" if rows[0].get("adversarial") else rows[0].get("family", "model")
    if iv.defined and iv.high < bigram:
        return True, f"J {iv.fmt(3)} below the counted bigram's {bigram:.3f} (margin {bigram - iv.high:.3f})", iv
    if (iv.defined and iv.low >= bigram) or (not iv.defined and iv.mean >= bigram):
        return False, f"{who} not usable: J {iv.fmt(3)} is no better than the counted bigram's {bigram:.3f}", iv
    high = f"{iv.high - bigram:.3f} above it" if iv.defined else "no interval"
    return None, (f"{who} not usable: J {iv.fmt(3)} is not clearly below the counted bigram's {bigram:.3f} "
                  f"(upper bound {high})"), iv


# ---- counting ------------------------------------------------------------------------------------------------


def _word_ids(dm, split: str):
    """(N, L) oracle word ids (0..V-1) of a split's targets: the only ids the samplers produce on oracle data."""
    import torch

    return torch.tensor(dm.reference_ids(split)) - dm.vocab.num_reserved


def _with_start(words, start: int):
    """(N, L) words -> (N, L) previous-word contexts, the start symbol before the first word."""
    import torch

    return torch.cat([torch.full((words.size(0), 1), start, dtype=torch.long), words[:, :-1]], dim=1)


def _entropy(probs):
    """(...,) -sum p log p over the last axis of ``probs`` (..., V), with 0 log 0 = 0."""
    import torch

    return torch.special.entr(probs).sum(dim=-1)


class _Unigram:
    """q(w) proportional to ((count(w) + k) / (N + kV))^(1/T)."""

    def __init__(self, counts, k: float, temperature: float = 1.0):
        import torch

        self.probs = torch.softmax(((counts + k) / (counts + k).sum()).log() / temperature, dim=0)  # (V,)

    def nll(self, words) -> float:
        return -self.probs.log()[words].mean().item()

    def sample(self, num: int, length: int, gen):
        return sample_from_probs(self.probs.expand(num * length, -1), gen).view(num, length)

    def entropy(self, length: int) -> float:
        return float(_entropy(self.probs))


class _Bigram:
    """q(w | previous word), the start symbol (id V) before the first word; add-k smoothed rows."""

    def __init__(self, pair_counts, k: float):
        self.probs = (pair_counts + k) / (pair_counts + k).sum(dim=1, keepdim=True)  # (V + 1, V)
        self.start = self.probs.size(0) - 1

    def nll(self, words) -> float:
        return -self.probs.log()[_with_start(words, self.start), words].mean().item()

    def sample(self, num: int, length: int, gen):
        import torch

        context = torch.full((num,), self.start, dtype=torch.long)
        words = []
        for _ in range(length):
            context = sample_from_probs(self.probs[context], gen)  # (N,)
            words.append(context)
        return torch.stack(words, dim=1)  # (N, L)

    def entropy(self, length: int) -> float:
        """Exact per-token entropy: at each position, the chain's state distribution times each row's entropy."""
        import torch

        row_entropy = _entropy(self.probs)  # (V + 1,)
        state = torch.zeros(self.probs.size(0), dtype=self.probs.dtype)
        state[self.start] = 1.0
        total = 0.0
        for _ in range(length):
            total += float(state @ row_entropy)
            state = torch.cat([state @ self.probs, state.new_zeros(1)])  # the start is never revisited
        return total / length


def _oracle_nll_of(dm, words) -> tuple[float, float]:
    """NLL_oracle per token (and its standard error) of baseline samples ``words`` (N, L), scored under the
    test split's conditions taken in order, as the models' samples are."""
    src, _, _ = dm.conditions("test", words.size(0))
    per_token = -dm.oracle_log_prob(words + dm.vocab.num_reserved, src).double() / dm.seq_len  # (N,)
    return per_token.mean().item(), (per_token.std() / math.sqrt(len(per_token))).item()


def _score(dm, model, split_words, h_oracle: float, num_samples: int, seed: int) -> dict:
    """NLL on ``split_words``, NLL_oracle of ``num_samples`` samples drawn with ``seed``, entropy and J."""
    import torch

    nll = model.nll(split_words)
    entropy = model.entropy(dm.seq_len)
    words = model.sample(num_samples, dm.seq_len, torch.Generator().manual_seed(seed))
    nll_oracle, se = _oracle_nll_of(dm, words)
    return {"nll_test_per_token": nll, "nll_oracle_per_token": nll_oracle, "nll_oracle_se": se,
            "entropy_per_token": entropy, "kl_pq": nll - h_oracle, "kl_qp": nll_oracle - entropy,
            "j": nll - h_oracle + nll_oracle - entropy}


def _best_k(dm, make, val, h_oracle: float, num_samples: int, seed: int) -> float:
    """The smoothing constant of ``SMOOTHING_GRID`` whose model has the lowest J with its NLL part measured on
    the validation split (the same samples' seed for every k; the reported numbers use fresh ones)."""
    scores = [(_score(dm, make(k), val, h_oracle, num_samples, seed)["j"], i) for i, k in enumerate(SMOOTHING_GRID)]
    return SMOOTHING_GRID[min(scores)[1]]


def counted_baselines(dm, temperatures: Sequence[float] = (), num_samples: int = NUM_SAMPLES,
                      seed: int = SAMPLE_SEED, entropy_samples: int = ENTROPY_SAMPLES) -> dict:
    """Every baseline of the module docstring for the oracle data module ``dm`` (prepared or not)."""
    import torch

    if not hasattr(dm, "oracle_log_prob"):
        raise ConfigError("counted baselines need oracle data (J needs the oracle's likelihood)")
    dm.prepare()
    V = dm.oracle_config.vocab_size
    train = dm.baseline_training_words()  # the training split, or as many fresh sentences as it says
    val, test = _word_ids(dm, "val"), _word_ids(dm, "test")
    h_oracle, h_oracle_se = dm.entropy_per_token(entropy_samples)
    report_seed = seed + 1  # the selection of k and the reported NLL_oracle use different samples

    counts = torch.bincount(train.flatten(), minlength=V).double()  # (V,)
    k_uni = _best_k(dm, lambda k: _Unigram(counts, k), val, h_oracle, num_samples, seed)
    unigram = {"name": "unigram", "k": k_uni,
               **_score(dm, _Unigram(counts, k_uni), test, h_oracle, num_samples, report_seed)}
    tempered = []
    for i, t in enumerate(temperatures):
        if t <= 0:
            raise ConfigError(f"temperatures must be > 0, got {t}")
        tempered.append({"name": "unigram", "k": k_uni, "temperature": float(t),
                         **_score(dm, _Unigram(counts, k_uni, t), test, h_oracle, num_samples, report_seed + 1 + i)})

    pairs = torch.zeros(V + 1, V, dtype=torch.float64)  # (contexts: V words + the start, next word)
    pairs.index_put_((_with_start(train, V).flatten(), train.flatten()),
                     torch.ones(train.numel(), dtype=torch.float64), accumulate=True)
    k_bi = _best_k(dm, lambda k: _Bigram(pairs, k), val, h_oracle, num_samples, seed)
    bigram = {"name": "bigram", "k": k_bi, **_score(dm, _Bigram(pairs, k_bi), test, h_oracle, num_samples, report_seed)}
    return {"oracle_entropy_per_token": h_oracle, "oracle_entropy_se": h_oracle_se,
            "uniform_nll_per_token": math.log(V), "unigram": unigram, "bigram": bigram,
            "unigram_tempered": tempered, "num_samples": num_samples, "seed": seed, "format": FORMAT_VERSION}


# ---- once per data config, cached in the run folder ----------------------------------------------------------

# Data-module arguments that change batching only, never the data.
_NOT_DATA = ("batch_size", "eval_batch_size", "seed", "drop_last", "num_workers", "cache_dir")


def data_key(data: dict, temperatures: Sequence[float]) -> str:
    init = {k: v for k, v in data.get("init_args", {}).items() if k not in _NOT_DATA}
    ident = {"class_path": data["class_path"], "init_args": init, "temperatures": [float(t) for t in temperatures],
             "samples": NUM_SAMPLES, "entropy_samples": ENTROPY_SAMPLES, "seed": SAMPLE_SEED,
             "grid": SMOOTHING_GRID, "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def baselines_for(run_dir: str | Path, data: dict, temperatures: Sequence[float] = ()) -> Optional[dict]:
    """The baselines of data config ``data`` (``{"class_path", "init_args"}``), from
    ``RUN_DIR/baselines/<key>.json`` or computed and cached there; None for data without an oracle."""
    path = Path(run_dir) / "baselines" / f"{data_key(data, temperatures)}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    dm = build_datamodule(data, batch_size=64, seed=0)
    if not hasattr(dm, "oracle_log_prob"):
        return None
    out = {"data": data, **counted_baselines(dm, temperatures)}
    atomic_write_text(path, json.dumps(out, indent=2, sort_keys=True) + "\n")
    return out


def _run_data(run_dir: Path, row: dict) -> Optional[dict]:
    path = run_dir / row.get("paths", {}).get("folder", "") / "run.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("data")


def attach_references(run_dir: str | Path, rows: list[dict], temperatures: Sequence[float] = ()) -> list[dict]:
    """Copies of ``rows``, each with ``reference`` = the baselines of the data it was trained on (read from its
    ``run.json``); rows on data without an oracle, or without a run folder, get none. One computation per
    data config, cached in the run folder."""
    run_dir = Path(run_dir)
    by_key: dict[str, Optional[dict]] = {}
    out = []
    for row in rows:
        data = _run_data(run_dir, row)
        reference = None
        if data is not None:
            key = data_key(data, temperatures)
            if key not in by_key:
                by_key[key] = baselines_for(run_dir, data, temperatures)
            reference = by_key[key]
        out.append({**row, "reference": reference} if reference else dict(row))
    return out


def references_of(rows: Sequence[dict]) -> list[dict]:
    """The distinct baselines attached to ``rows``, in order of first appearance."""
    seen, out = set(), []
    for r in rows:
        ref = r.get("reference")
        if ref and id(ref) not in seen:
            seen.add(id(ref))
            out.append(ref)
    return out
