"""The embedded default data: sequences drawn from a synthetic LSTM oracle (SeqGAN / Texygen benchmark).

Oracle tokens ``k`` become words ``w{k}`` in the shared vocabulary, so the models, the sampler and the metrics
treat oracle data exactly like text. Generated splits are cached on disk under a key of the oracle's config and
seeds; a missing cache is regenerated identically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Literal, Optional

import torch

from modules.data.base import EpochDataset, SequenceDataModule
from modules.data.batch import Example
from modules.data.errors import DataError
from modules.data.vocab import NULL_ID, Vocab
from modules.files import atomic_open
from modules.nets.oracle import LSTMOracle, OracleConfig

log = logging.getLogger(__name__)

# Standard: the SeqGAN / Texygen setting. Small: a full CPU training run takes seconds.
PRESETS = {
    "standard": dict(vocab_size=5000, seq_len=20, emb_dim=32, hidden_dim=32, num_train=10_000, num_val=1_000, num_test=10_000),
    "small": dict(vocab_size=200, seq_len=12, emb_dim=32, hidden_dim=32, num_train=2_000, num_val=250, num_test=1_000),
}
CACHE_FORMAT_VERSION = 2
# The oracle-entropy estimate draws from its own generator, seeded far from any oracle_seed of the splits.
ENTROPY_SEED_OFFSET = 7_919_003


def default_cache_dir() -> Path:
    if os.environ.get("GVT_CACHE_DIR"):
        return Path(os.environ["GVT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gan-vs-transformer"


class OracleDataModule(SequenceDataModule):
    """Data drawn from a synthetic LSTM oracle, unconditional or conditional.

    Args:
        preset: ``small`` or ``standard``; explicit size arguments override the preset.
        condition: ``none`` (SeqGAN oracle), ``label`` (K classes) or ``source`` (source sequence -> sequence).
        num_classes: K for ``label``.
        condition_strength: how strongly the condition moves the oracle (0: output independent of it).
        source_len: length of source sequences for ``source``.
        oracle_seed: seed of the oracle's weights and of the generated splits.
        cache_dir: where generated splits are cached (default: $GVT_CACHE_DIR or ~/.cache/gan-vs-transformer).
        train_samples: ``fixed`` (the SeqGAN benchmark: one training split of ``num_train`` sentences, reused
            every epoch) or ``fresh`` (an oracle has unlimited data: every epoch is ``num_train`` new sentences,
            drawn with a generator seeded by the oracle seed, the run's data seed and the epoch, so the same
            seed gives the same samples in any process; validation and test stay fixed).
        baseline_samples: with fresh samples, how many training sentences the counted baselines are fitted on
            (``baseline_training_words``: the first ones the run of data seed 0 sees); default ``num_train``.
        sharpness: the oracle's output logits times this (> 1: a lower-entropy oracle with the same weights).
    """

    def __init__(
        self,
        preset: Literal["small", "standard"] = "small",
        condition: Literal["none", "label", "source"] = "none",
        num_classes: int = 2,
        condition_strength: float = 1.0,
        source_len: int = 8,
        vocab_size: Optional[int] = None,
        seq_len: Optional[int] = None,
        emb_dim: Optional[int] = None,
        hidden_dim: Optional[int] = None,
        num_train: Optional[int] = None,
        num_val: Optional[int] = None,
        num_test: Optional[int] = None,
        oracle_seed: int = 0,
        cache_dir: Optional[str] = None,
        train_samples: Literal["fixed", "fresh"] = "fixed",
        baseline_samples: Optional[int] = None,
        sharpness: float = 1.0,
        batch_size: int = 64,
        eval_batch_size: Optional[int] = None,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, seed, drop_last, num_workers)
        if preset not in PRESETS:
            raise DataError(f"data.preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if condition not in ("none", "label", "source"):
            raise DataError(f"data.condition must be 'none', 'label' or 'source', got {condition!r}")
        if condition == "label" and num_classes < 2:
            raise DataError(f"data.num_classes must be >= 2 for condition='label', got {num_classes}")
        if source_len < 1:
            raise DataError(f"data.source_len must be >= 1, got {source_len}")
        sizes = dict(PRESETS[preset])
        for name, value in dict(vocab_size=vocab_size, seq_len=seq_len, emb_dim=emb_dim, hidden_dim=hidden_dim,
                                num_train=num_train, num_val=num_val, num_test=num_test).items():
            if value is not None:
                if value < 1:
                    raise DataError(f"data.{name} must be >= 1, got {value}")
                sizes[name] = value
        if train_samples not in ("fixed", "fresh"):
            raise DataError(f"data.train_samples must be 'fixed' or 'fresh', got {train_samples!r}")
        if baseline_samples is not None and (train_samples != "fresh" or baseline_samples < 1):
            raise DataError(f"data.baseline_samples (got {baseline_samples}) is a count >= 1 of fresh training "
                            "sentences: it needs data.train_samples: fresh (fixed data count their training split)")
        self.train_samples, self.baseline_samples = train_samples, baseline_samples
        self.preset = preset
        self.condition = condition
        self.num_train, self.num_val, self.num_test = sizes.pop("num_train"), sizes.pop("num_val"), sizes.pop("num_test")
        self.source_len = source_len
        self.oracle_seed = oracle_seed
        self.oracle_config = OracleConfig(
            **sizes,
            seed=oracle_seed,
            num_classes=num_classes if condition == "label" else 0,
            source_conditional=condition == "source",
            condition_strength=condition_strength if condition != "none" else 0.0,
            sharpness=sharpness,
        )
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.oracle = LSTMOracle(self.oracle_config)
        # Sources come from a second, unconditional oracle with another seed: realistic sequences over the
        # same words, independent of the target oracle's weights.
        self.source_oracle = (
            LSTMOracle(OracleConfig(**{**sizes, "seq_len": source_len}, seed=oracle_seed + 1_000_003))
            if condition == "source" else None
        )

    @property
    def seq_len(self) -> int:
        return self.oracle_config.seq_len

    @property
    def labels(self) -> list[str]:
        return [f"c{k}" for k in range(self.oracle_config.num_classes)]

    def _make_vocab(self) -> Vocab:
        return Vocab([f"w{k}" for k in range(self.oracle_config.vocab_size)], labels=self.labels)

    # ---- data generation with an on-disk cache -------------------------------------------------------------
    def cache_key(self) -> str:
        key = dict(asdict(self.oracle_config), condition=self.condition, source_len=self.source_len,
                   num_train=self.num_train, num_val=self.num_val, num_test=self.num_test,
                   version=CACHE_FORMAT_VERSION)
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]

    def sample_conditions(self, num: int, generator: torch.Generator) -> Optional[torch.Tensor]:
        """Conditions in oracle ids: (num,) classes drawn uniformly, (num, S) source sequences, or None."""
        if self.condition == "label":
            return torch.randint(self.oracle_config.num_classes, (num,), generator=generator)
        if self.condition == "source":
            return self.source_oracle.sample(num, generator)
        return None

    def _generate(self) -> dict[str, dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.oracle_seed)
        out = {}
        for split, n in (("train", self.num_train), ("val", self.num_val), ("test", self.num_test)):
            cond = self.sample_conditions(n, gen)
            tgt = self.oracle.sample(n, gen, cond)
            out[split] = {"tgt": tgt} if cond is None else {"tgt": tgt, "cond": cond}
        return out

    def _atomic_cache_write(self, path: Path, mode: str, write) -> None:
        """``write(file)`` into ``path`` atomically (a crash never leaves a half-written cache under the final name).
        A cache folder that cannot be written is a warning, not an error (the value is recomputed)."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, mode) as f:
                write(f)
        except OSError as err:
            log.warning("could not write the oracle cache to %s (%s); continuing without it", self.cache_dir, err)

    def _load_or_generate(self) -> dict[str, dict[str, torch.Tensor]]:
        path = self.cache_dir / f"oracle-{self.cache_key()}.pt"
        if path.exists():
            try:
                return torch.load(path, weights_only=True)
            except Exception as err:  # a truncated cache is regenerated, not trusted
                log.warning("oracle cache %s is unreadable (%s); regenerating it", path, err)
        data = self._generate()
        self._atomic_cache_write(path, "wb", lambda f: torch.save(data, f))
        return data

    def _examples_of(self, vocab: Vocab, tgt: torch.Tensor, cond: Optional[torch.Tensor]) -> list[Example]:
        """Oracle ids -> examples in the shared vocabulary."""
        offset = vocab.num_reserved
        tgt = (tgt + offset).tolist()
        if self.condition == "label":
            label_ids = vocab.label_ids
            return [Example([label_ids[c]], t, c) for t, c in zip(tgt, cond.tolist())]
        if self.condition == "source":
            return [Example(s, t) for t, s in zip(tgt, (cond + offset).tolist())]
        return [Example([NULL_ID], t) for t in tgt]

    def build(self):
        vocab = self._make_vocab()
        splits = {split: self._examples_of(vocab, tensors["tgt"], tensors.get("cond"))
                  for split, tensors in self._load_or_generate().items()}
        return splits, vocab

    # ---- fresh samples every epoch ---------------------------------------------------------------------------
    def fresh_generator(self, data_seed: int, epoch: int) -> torch.Generator:
        """The generator of epoch ``epoch``'s fresh training sentences for data seed ``data_seed``."""
        digest = hashlib.sha256(f"fresh/{self.oracle_seed}/{data_seed}/{epoch}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)

    def fresh_examples(self, data_seed: int, epoch: int) -> list[Example]:
        """Epoch ``epoch``'s ``num_train`` fresh training examples for data seed ``data_seed``."""
        gen = self.fresh_generator(data_seed, epoch)
        cond = self.sample_conditions(self.num_train, gen)
        return self._examples_of(self.vocab, self.oracle.sample(self.num_train, gen, cond), cond)

    def train_dataset(self):
        if self.train_samples == "fixed":
            return super().train_dataset()
        # a partial of a method, not a lambda: loader workers started by spawn must be able to unpickle it
        return EpochDataset(self.num_train, functools.partial(self.fresh_examples, self.seed))

    def baseline_training_words(self) -> torch.Tensor:
        """(N, L) oracle word ids the counted baselines are fitted on: the training split (fixed data), or the first
        ``baseline_samples`` fresh training sentences of data seed 0 (fresh data)."""
        if self.train_samples == "fixed":
            examples = self.examples("train")
        else:
            wanted = self.baseline_samples or self.num_train
            examples, epoch = [], 0
            while len(examples) < wanted:
                examples += self.fresh_examples(0, epoch)
                epoch += 1
            examples = examples[:wanted]
        return torch.tensor([ex.tgt for ex in examples]) - self.vocab.num_reserved

    # ---- exact scoring ---------------------------------------------------------------------------------------
    def to_oracle_ids(self, ids: torch.Tensor, what: str = "samples") -> torch.Tensor:
        offset = self.vocab.num_reserved
        oracle_ids = ids - offset
        if ids.numel() and (oracle_ids.min() < 0 or oracle_ids.max() >= self.oracle_config.vocab_size):
            raise ValueError(f"{what} contain non-word tokens; the oracle scores only words w0..w{self.oracle_config.vocab_size - 1}")
        return oracle_ids

    def oracle_condition(self, src: torch.Tensor) -> Optional[torch.Tensor]:
        """Batch ``src`` (vocab ids) -> the oracle's condition (class ids or source ids), None if unconditional."""
        if self.condition == "label":
            return src[:, 0] - self.vocab.label_ids[0]
        if self.condition == "source":
            return self.to_oracle_ids(src, "source conditions")
        return None

    def oracle_log_prob(self, tokens: torch.Tensor, src: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Exact oracle log-likelihood (B,) of generated word ids (B, L), given the batch's conditions ``src``.

        Samples must have exactly ``seq_len`` words (generate with min = max = seq_len new tokens).
        """
        if tokens.size(1) != self.seq_len:
            raise ValueError(f"oracle scoring needs sequences of exactly {self.seq_len} words, got {tokens.size(1)}")
        cond = None if self.condition == "none" else self.oracle_condition(src.cpu())
        return self.oracle.log_prob(self.to_oracle_ids(tokens.cpu()), cond)

    def true_mutual_information(self, num_samples: int = 2000, seed: int = 0, num_contrast: int = 64) -> tuple[float, float]:
        """The oracle's own I(condition; output) in nats, Monte Carlo, with its standard error."""
        gen = torch.Generator().manual_seed(seed)
        return self.oracle.mutual_information(
            num_samples, gen, lambda n: self.sample_conditions(n, gen), num_contrast=num_contrast
        )

    def entropy_per_token(self, num_samples: int = 10_000, seed: int = 0) -> tuple[float, float]:
        """The oracle's own entropy H(y | c) per token in nats, with its standard error: the mean of
        -log p_O(y | c) / L over ``num_samples`` of its own samples (conditions drawn from the data's condition
        distribution). The floor of every model's NLL_test: NLL_test - H is the model's KL(p_O || q) per token.

        The samples come from a generator seeded apart from the splits' (``seed`` picks another draw), so the
        estimate is independent of the training and test data. Cached on disk beside the splits, keyed by the
        oracle's config, ``num_samples`` and ``seed``; a missing cache is recomputed identically.
        """
        if num_samples < 2:
            raise ValueError(f"entropy_per_token needs num_samples >= 2 for a standard error, got {num_samples}")
        path = self.cache_dir / f"oracle-{self.cache_key()}-entropy-n{num_samples}-s{seed}.json"
        if path.exists():
            try:
                cached = json.loads(path.read_text())
                return float(cached["entropy_per_token"]), float(cached["standard_error"])
            except (ValueError, KeyError) as err:  # a damaged cache is recomputed, not trusted
                log.warning("oracle entropy cache %s is unreadable (%s); recomputing it", path, err)
        gen = torch.Generator().manual_seed(ENTROPY_SEED_OFFSET + seed)
        cond = self.sample_conditions(num_samples, gen)
        y = self.oracle.sample(num_samples, gen, cond)  # (N, L)
        per_token = -self.oracle.log_prob(y, cond).double() / self.seq_len  # (N,)
        value = per_token.mean().item()
        se = (per_token.std() / num_samples ** 0.5).item()
        text = json.dumps({"entropy_per_token": value, "standard_error": se, "num_samples": num_samples, "seed": seed})
        self._atomic_cache_write(path, "w", lambda f: f.write(text))
        return value, se
