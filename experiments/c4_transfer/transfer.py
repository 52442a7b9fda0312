"""C4, ``gvt ablate transfer``: the ULMFiT recipe against training from scratch, at small labelled-set sizes.

The lecture's claim: transfer learning reached NLP with ULMFiT (Howard & Ruder 2018): pretrain a language model on
a general corpus, adapt it to the target domain, then fine-tune a classifier; it needs far fewer labelled examples
than training from scratch. Tested here on the corpora in ``$GVT_DATA_DIR`` (``../shared/data``):

1. **Data** (``prepare_data``, once per run folder): the general corpus is COCO captions (``coco/train.txt``) plus
   Multi30k English (``multi30k/train.en.gz``); MR (``mr/rt-polarity.{neg,pos}``, Latin-1) is split once into
   train / val / test with ``split_seed`` (stratified by class, ``TextDataModule``'s carving; fixed across seeds).
   One tokenizer (the package's byte-level BPE, lowercased) and one vocabulary (``Vocab``) are fitted on the
   general corpus plus the MR training sentences, so the language model and the classifiers share ids. Sentences
   are truncated to ``max_len`` tokens. The result is cached in ``OUT/data/`` (never in the corpora folder).
2. **Language models** (kind ``lm``, per body and seed, the pilot seed included). For the ``pretrained`` arm: a
   ``LanguageModel`` (``modules.models.classifier``) pretrained on the general corpus until its NLL per token on
   ``data.general_val`` held-out general sentences is at most ``pretrain.target_nll`` (checked every
   ``pretrain.val_every`` updates) or ``pretrain.max_updates`` (the cap); the row's ``stages.pretrain`` says which
   (``stop``: "target" or "cap"), the NLL reached (``val_nll``), its curve, and ``uniform_nll`` (log of the tokens a
   model can produce: the NLL of knowing nothing). Then adapted (continued LM training, fresh optimiser) on the MR
   training sentences (text only, no labels), with early stopping on the NLL of MR's validation sentences
   (``adapt``: ``val_every``, ``patience``, cap ``max_updates``). For the ``adapt_only`` arm (ULMFiT's stage 2
   alone, key prefix ``lm-adapt-only``): the same adaptation from the random initialisation, no general corpus.
   Each row's ``nll_mr_test`` is the NLL per token of the MR test sentences before training, after pretraining
   and after adaptation. Every seed trains its own, so the seed intervals cover pretraining, adaptation and
   fine-tuning alike.
3. **Learning-rate pilot** (kind ``pilot``, ``experiments.c4_transfer.pilot``): per body and arm, each rate of
   ``pilot.lrs`` on the pilot seed at ``pilot.sizes``; the best mean validation accuracy picks the arm's peak rate,
   written to ``OUT/pilot.json`` and ``OUT/preregistration.json`` before any verdict classifier runs.
4. **Classifiers** (kind ``classifier``): for each labelled-set size n in ``label_sizes`` (``all`` = the whole MR
   training split) and each seed, a balanced subset of the MR training split (n/2 per class, seeded by the seed,
   nested: the 50 are among the 100, ...), shared by every arm. Arms: ``pretrained`` and ``adapt_only`` (a
   ``SentenceClassifier`` whose body is that arm's language model's, with a new head) and ``scratch`` (the body
   at its random initialisation). Same seed (so the same head initialisation and batch order), same budget
   (``finetune_updates(n)``: ``epochs`` passes over the subset, clamped to [``min_updates``, ``max_updates``]),
   same early stopping on MR's validation split (the best validation weights are tested; never stopped before the
   last layer group is unfrozen), same optimiser (``experiments.core.presets.GENERATOR_OPTIMIZER``) under
   ``finetune.schedule`` (ULMFiT's slanted triangular rates, ``cut_frac`` 0.1, ``ratio`` 32, over the planned
   updates), each arm at its pilot's peak rate. The arms in ``ulmfit.arms`` (those with a language model) are
   fine-tuned by ULMFiT's recipe (``modules.ulmfit``): discriminative rates (layer group l of G gets
   ``lr / 2.6 ** (G - 1 - l)``; groups: embedding, each layer, head) and gradual unfreezing (the head alone first,
   one more group every ``ulmfit.unfreeze_every`` updates). Scratch trains every layer at one rate from the start:
   its random lower layers hold nothing to protect. Accuracy on the fixed MR test split is the row's
   ``accuracy``; ``majority_accuracy`` is what always answering the training split's most frequent class scores.

Bodies: ``lstm`` (the RNN family's LSTM) and ``transformer`` (the Transformer's encoder blocks, causal); see
``modules/nets/classifier.py``. ``primary_body`` is the one verdict C4 is decided on; the other is reported beside
it.

**Verdict C4** (``verdict``): the primary cell is, per seed, accuracy(pretrained) - accuracy(scratch) at
``primary_size`` (100) labelled examples on the primary body, paired by seed; SESOI ``SESOI`` (0.05 accuracy).
The precondition (gate): at the largest labelled size both arms of that cell beat the counted baselines
(``experiments.c4_transfer.baselines``: multinomial Naive Bayes and logistic regression on bags of words, fitted on the
same subsets): each arm's t interval over seeds lies above the better baseline's mean accuracy. Otherwise the
comparison is between classifiers that do not beat counting words, and C4 is inconclusive, printing each arm's
margin. Secondary cells: the difference at every other size; at ``primary_size``, adapt_only - scratch and
pretrained - adapt_only (what adaptation alone gives, and what the general corpus adds to it); descriptively, the
labels scratch needs to match the pretrained classifier at ``primary_size``.

Presets: ``lecture`` (2 CPU cores), ``gpu`` (larger bodies and pretraining, ``accelerator="auto"``; not yet
measured) and ``smoke`` (tests).

Runs are resumable: a row in ``OUT/results.jsonl`` (``experiments.core.results.ResultsTable``, atomic, locked) is not
redone; the language model's body weights are written (atomically) before its row.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from experiments.core.execute import run_tasks
from experiments.core.presets import GENERATOR_OPTIMIZER
from experiments.core.results import ResultsTable
from experiments.core.runner import config_hash
from experiments.core.stats import t_interval
from experiments.c4_transfer.pilot import choose_rates
from experiments.core.verdicts import Cell, Verdict, VerdictSettings, _not_run, _standard
from modules.data.base import SequenceDataModule
from modules.callbacks import KeepBestOnValidation
from modules.errors import ConfigError, GvtError
from modules.files import atomic_open, atomic_write_text

QUESTION = "C4"
CLAIM = ("Transfer learning (ULMFiT: pretrain a language model on a general corpus, adapt it to the target domain, "
         "fine-tune a classifier) needs far fewer labelled examples than training the same classifier from scratch.")
# SESOI: 0.05 accuracy on balanced binary MR is a tenth of the way from chance (0.5) to perfect. Smaller gains would
# not amount to "far fewer labelled examples" (at these sizes doubling the labels moves a classifier by more than
# that), and it is about four standard errors of one run's test accuracy on ~2,100 test sentences (0.011), so a
# difference of that size is not evaluation noise.
SESOI = 0.05
BODIES = ("lstm", "transformer")
# pretrained: general-corpus pretraining, then adaptation to MR's text; adapt_only: ULMFiT's stage 2 alone (the
# language model trained on MR's text only, from its random initialisation); scratch: no language model at all
ARMS = ("pretrained", "adapt_only", "scratch")
GATED_ARMS = ("pretrained", "scratch")  # the primary cell's two arms: both must beat counting words
LM_ARMS = {"pretrained": "general", "adapt_only": "none"}  # arm -> the language model's pretraining ("none": skipped)
ALL = "all"
DATA_FILE = "prepared.pt"

Size = Union[int, str]


def _default_data() -> dict:
    return dict(
        general=["$GVT_DATA_DIR/coco/train.txt", "$GVT_DATA_DIR/multi30k/train.en.gz"],
        general_encoding="utf-8",
        general_val=1000,  # general sentences held out (seeded by split_seed): pretraining's validation NLL
        mr={"neg": "$GVT_DATA_DIR/mr/rt-polarity.neg", "pos": "$GVT_DATA_DIR/mr/rt-polarity.pos"},
        mr_encoding="latin-1",
        val_fraction=0.1, test_fraction=0.2, split_seed=0,
        tokenizer="bpe", lowercase=True, bpe_vocab_size=3000, min_freq=1,
        max_len=32,  # tokens per sentence, longer ones truncated
        max_general=None,  # the first N general sentences only (None: all)
        max_mr_train=None, max_mr_test=None,  # the first N of the MR train / test split only (None: all)
    )


def _layer_groups(body: str, body_args: dict) -> int:
    """ULMFiT's layer groups of a classifier on ``body`` (``modules.ulmfit.layer_groups``): the embedding, each
    layer, the head."""
    return 2 + int(body_args["num_layers"] if body == "lstm" else body_args["n_encoder_layers"])


@dataclass
class TransferSettings:
    """Every knob of the transfer ablation (module docstring)."""

    data: dict = field(default_factory=_default_data)
    bodies: list[str] = field(default_factory=lambda: list(BODIES))
    primary_body: str = "lstm"
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    body_args: dict = field(default_factory=lambda: {
        "lstm": dict(emb_dim=64, hidden_dim=128, num_layers=1, dropout=0.1),
        "transformer": dict(d_model=64, n_heads=2, n_encoder_layers=2, d_ff=128, dropout=0.1, max_len=64),
    })
    label_sizes: list[Size] = field(default_factory=lambda: [50, 100, 500, 2000, ALL])
    primary_size: int = 100
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # pretraining on the general corpus until the validation NLL per token (general_val sentences) is at most
    # target_nll, checked every val_every updates, or max_updates (the cap); the row says which ended it
    pretrain: dict = field(default_factory=lambda: dict(target_nll=4.0, max_updates=600, val_every=100,
                                                        batch_size=64, lr=2e-3))
    # adaptation on MR's training text: early stopping on the NLL of MR's validation sentences, best weights kept
    adapt: dict = field(default_factory=lambda: dict(max_updates=300, val_every=50, patience=3, batch_size=64,
                                                     lr=1e-3))
    # early stopping: a validation on MR's val split every val_every updates, stop after patience checks without a
    # better accuracy (never before the last layer group is unfrozen), test the best weights; max_updates is the
    # cap. lr: every arm's peak rate when there is no pilot (else the pilot's choice); schedule "stlr" (ULMFiT's
    # slanted triangular, cut_frac, ratio, over the planned updates) or "constant", for every arm
    finetune: dict = field(default_factory=lambda: dict(batch_size=32, epochs=20, min_updates=100, max_updates=600,
                                                        lr=1e-3, head_dropout=0.1, val_every=25, patience=4,
                                                        schedule="stlr", cut_frac=0.1, ratio=32.0))
    # ULMFiT's discriminative rates (group l of G: lr / lr_factor ** (G - 1 - l)) and gradual unfreezing (one more
    # group every unfreeze_every updates, head first) for the arms that start from a language model; scratch
    # trains every layer at one rate from the start (its layers hold nothing to protect)
    ulmfit: dict = field(default_factory=lambda: dict(arms=["pretrained", "adapt_only"], lr_factor=2.6,
                                                      unfreeze_every=25))
    # the learning-rate pilot: per body and arm, every rate of lrs on the pilot seed (its own language models and
    # subsets, never a verdict seed's) at the given sizes; the best mean validation accuracy picks the arm's rate
    # (ties: the first in lrs); None: finetune.lr for every arm
    # lecture grid: 1e-3 left every arm still improving or near chance at its cap on real MR (docs/experiments.md)
    pilot: Optional[dict] = field(default_factory=lambda: dict(seed=1000, lrs=[1e-3, 3e-3, 1e-2], sizes=[100]))
    optimizer: dict = field(default_factory=lambda: dict(GENERATOR_OPTIMIZER))
    eval_batch_size: int = 256
    sesoi: float = SESOI
    threads: int = 1  # torch threads per run: the numbers are the same whether runs go in 1 or N workers
    accelerator: str = "cpu"  # Lightning's: "cpu", or "auto"/"gpu" for the GPU preset

    def __post_init__(self):
        for body in self.bodies:
            if body not in BODIES:
                raise ConfigError(f"transfer.bodies: unknown body {body!r}; choose from {', '.join(BODIES)}")
            if body not in self.body_args:
                raise ConfigError(f"transfer.body_args has no settings for body {body!r}")
        if self.primary_body not in self.bodies:
            raise ConfigError(f"transfer.primary_body={self.primary_body!r} is not among the bodies {self.bodies}")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not set(GATED_ARMS) <= set(self.arms):
            raise ConfigError(f"transfer.arms: {self.arms} must be among {', '.join(ARMS)} and hold "
                              f"{' and '.join(GATED_ARMS)} (the primary cell's arms)")
        for size in self.label_sizes:
            if size != ALL and (isinstance(size, bool) or not isinstance(size, int) or size < 2 or size % 2):
                raise ConfigError(f"transfer.label_sizes: {size!r} is not an even number >= 2 or 'all' "
                                  "(subsets are balanced: n/2 per class)")
        if self.primary_size not in self.label_sizes:
            raise ConfigError(f"transfer.primary_size={self.primary_size} is not among label_sizes {self.label_sizes}")
        if not self.seeds:
            raise ConfigError("transfer.seeds is empty")
        pre = self.pretrain
        if not (isinstance(pre.get("max_updates"), int) and pre["max_updates"] >= 0):
            raise ConfigError(f"transfer.pretrain.max_updates must be an integer >= 0, got {pre.get('max_updates')!r}")
        if not (isinstance(pre.get("target_nll"), (int, float)) and pre["target_nll"] > 0):
            raise ConfigError(f"transfer.pretrain.target_nll must be a number > 0 (nats per token), got "
                              f"{pre.get('target_nll')!r}")
        for stage, knobs in (("pretrain", ("val_every",)), ("adapt", ("max_updates", "val_every", "patience"))):
            for knob in knobs:
                value = getattr(self, stage).get(knob)
                if not isinstance(value, int) or value < (0 if knob == "max_updates" else 1):
                    raise ConfigError(f"transfer.{stage}.{knob} must be an integer >= "
                                      f"{0 if knob == 'max_updates' else 1}, got {value!r}")
        ft = self.finetune
        for knob in ("val_every", "patience"):
            if not isinstance(ft.get(knob), int) or ft[knob] < 1:
                raise ConfigError(f"transfer.finetune.{knob} must be an integer >= 1, got {ft.get(knob)!r}")
        if not 1 <= ft["min_updates"] <= ft["max_updates"]:
            raise ConfigError(f"transfer.finetune needs 1 <= min_updates <= max_updates, got {ft['min_updates']}, "
                              f"{ft['max_updates']}")
        if ft.get("schedule", "constant") not in ("constant", "stlr"):
            raise ConfigError(f"transfer.finetune.schedule must be 'constant' or 'stlr', got {ft.get('schedule')!r}")
        ul = self.ulmfit
        if [a for a in ul.get("arms", []) if a not in LM_ARMS]:
            raise ConfigError(f"transfer.ulmfit.arms: {ul['arms']} may only name arms with a language model "
                              f"({', '.join(LM_ARMS)})")
        if not (ul.get("lr_factor", 0) >= 1.0 and isinstance(ul.get("unfreeze_every"), int)
                and ul["unfreeze_every"] >= 0):
            raise ConfigError(f"transfer.ulmfit needs lr_factor >= 1 and an integer unfreeze_every >= 0, got "
                              f"{ul.get('lr_factor')!r}, {ul.get('unfreeze_every')!r}")
        for body in self.bodies:  # every group must get to train within the smallest budget
            unfrozen = (_layer_groups(body, self.body_args[body]) - 1) * ul["unfreeze_every"]
            if ul.get("arms") and unfrozen >= ft["min_updates"]:
                raise ConfigError(f"transfer.ulmfit.unfreeze_every={ul['unfreeze_every']}: the {body} body's last "
                                  f"layer group would unfreeze at update {unfrozen}, not before "
                                  f"finetune.min_updates={ft['min_updates']}")
        if self.pilot is not None:
            p = self.pilot
            if p.get("seed") in self.seeds:
                raise ConfigError(f"transfer.pilot.seed={p.get('seed')} is a verdict seed; the pilot needs its own")
            if not p.get("lrs") or any(not (isinstance(x, (int, float)) and x > 0) for x in p["lrs"]):
                raise ConfigError(f"transfer.pilot.lrs must be a non-empty list of rates > 0, got {p.get('lrs')!r}")
            if not p.get("sizes") or any(x not in self.label_sizes for x in p["sizes"]):
                raise ConfigError(f"transfer.pilot.sizes={p.get('sizes')!r} must be among label_sizes "
                                  f"{self.label_sizes}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def lm_seeds(self) -> list[int]:
        """The seeds that get language models: the verdict seeds, then the pilot's."""
        return list(self.seeds) + ([int(self.pilot["seed"])] if self.pilot is not None else [])


def lecture() -> TransferSettings:
    """Its share of the lecture preset, sized for about 30 min on 2 CPU cores: the primary body (lstm) only, 3
    seeds and a pilot seed (the transformer body is the gpu preset's, or ``--bodies lstm transformer``). The
    budget, from one torch thread's CPU-seconds measured on the shared 2-core machine (docs/experiments.md, C4):
    a language-model update costs about 0.3 CPU-s on general sentences and 0.5 on MR's longer ones, a classifier
    update about 0.07 and a validation on MR's 1,066 sentences about 0.4. Four seeds' language models at 600
    pretraining and at most 300 + 300 adaptation updates are about 1,900 CPU-s, the 45 classifiers (at most 1,713
    updates per arm and seed) about 800, the pilot about 90 and the counted baselines about 140: about 2,900
    CPU-s, 25 min on 2 idle cores. Pretraining stops at ``target_nll`` or the 600-update cap."""
    return TransferSettings(bodies=["lstm"])


def gpu() -> TransferSettings:
    """The larger preset for one GPU (not yet measured): both bodies, of ULMFiT's shape at a smaller width (a
    3-layer LSTM of 400, a 4-block Transformer of 256), pretraining to a lower NLL with a 50x larger cap, 5 seeds,
    a pilot at 100 and all labels."""
    return TransferSettings(bodies=list(BODIES),
        body_args={"lstm": dict(emb_dim=400, hidden_dim=400, num_layers=3, dropout=0.2),
                   "transformer": dict(d_model=256, n_heads=4, n_encoder_layers=4, d_ff=1024, dropout=0.1,
                                       max_len=64)},
        seeds=[0, 1, 2, 3, 4],
        pretrain=dict(target_nll=3.0, max_updates=30000, val_every=500, batch_size=128, lr=1e-3),
        adapt=dict(max_updates=3000, val_every=100, patience=5, batch_size=64, lr=5e-4),
        finetune=dict(batch_size=32, epochs=30, min_updates=150, max_updates=1500, lr=1e-3, head_dropout=0.2,
                      val_every=25, patience=6, schedule="stlr", cut_frac=0.1, ratio=32.0),
        ulmfit=dict(arms=["pretrained", "adapt_only"], lr_factor=2.6, unfreeze_every=25),
        pilot=dict(seed=1000, lrs=[1e-4, 3e-4, 1e-3, 3e-3], sizes=[100, ALL]),
        eval_batch_size=512, accelerator="auto")


def smoke() -> TransferSettings:
    """Seconds, for tests: a slice of the corpora, tiny bodies, a few updates, two sizes, a two-rate pilot."""
    data = {**_default_data(), "bpe_vocab_size": 300, "max_len": 16, "max_general": 400, "general_val": 50,
            "max_mr_train": 200, "max_mr_test": 100}
    return TransferSettings(
        data=data,
        body_args={"lstm": dict(emb_dim=16, hidden_dim=16, num_layers=1, dropout=0.0),
                   "transformer": dict(d_model=16, n_heads=2, n_encoder_layers=1, d_ff=32, dropout=0.0, max_len=32)},
        label_sizes=[20, ALL], primary_size=20, seeds=[0, 1],
        pretrain=dict(target_nll=4.0, max_updates=8, val_every=4, batch_size=32, lr=3e-3),
        adapt=dict(max_updates=4, val_every=2, patience=2, batch_size=32, lr=1e-3),
        finetune=dict(batch_size=16, epochs=1, min_updates=4, max_updates=6, lr=1e-3, head_dropout=0.0, val_every=2,
                      patience=2, schedule="stlr", cut_frac=0.1, ratio=32.0),
        ulmfit=dict(arms=["pretrained", "adapt_only"], lr_factor=2.6, unfreeze_every=1),
        pilot=dict(seed=1000, lrs=[1e-3, 3e-3], sizes=[20]),
        eval_batch_size=128,
    )


PRESETS: dict[str, Callable[[], TransferSettings]] = {"lecture": lecture, "gpu": gpu, "smoke": smoke}


def preregistration(preset: str, lr_choices: Optional[dict] = None) -> dict:
    """C4's settings, SESOI, gates and learning-rate pilot (its grid and rule; with ``lr_choices``, what it chose:
    ``{body: {arm: lr}}``) as one JSON-able dict, for the lecture's pre-registration hash."""
    if preset not in PRESETS:
        raise ConfigError(f"transfer preset {preset!r} unknown; choose from {', '.join(PRESETS)}")
    return {"preset": preset, **preregistration_of(PRESETS[preset](), lr_choices)}


def preregistration_of(settings: TransferSettings, lr_choices: Optional[dict] = None) -> dict:
    """``preregistration``'s dict for any settings (a run folder's own, ``--seeds`` and all)."""
    from experiments.c4_transfer.baselines import LOGISTIC_L2, LOGISTIC_MAX_ITER, NB_ALPHA

    out = {"question": QUESTION, "settings": settings.to_dict(), "sesoi": SESOI,
           "primary": "acc(pretrained) - acc(scratch) at primary_size on primary_body, paired by seed",
           "gates": {"counted_baselines": "at the largest labelled size each of the pretrained and scratch arms' t "
                                          "interval over seeds lies above the better counted baseline's mean accuracy",
                     "baselines": {"naive_bayes": {"alpha": NB_ALPHA},
                                   "logistic": {"l2": LOGISTIC_L2, "max_iter": LOGISTIC_MAX_ITER,
                                                "features": "binary bag of words"}}},
           "pilot": None if settings.pilot is None else {
               **settings.pilot, "rule": "per body and arm, the rate with the best mean validation accuracy over the "
                                         "pilot sizes on the pilot seed (ties: the first listed)"}}
    if lr_choices is not None:
        out["lr_choices"] = lr_choices
    return out


def corpora(settings: TransferSettings) -> dict[str, dict]:
    """The lecture's corpus contract (``experiments.core.corpus_check``): C4's verdict needs both the general corpus
    and MR, so neither is optional."""
    return {"general": {"files": list(settings.data["general"]), "needed": True},
            "MR": {"files": list(settings.data["mr"].values()), "needed": True}}


def finetune_updates(ft: dict, n: int) -> int:
    """Classifier updates for n labelled examples (``ft``: ``TransferSettings.finetune``), the same for both arms:
    ``epochs`` passes over the subset, clamped to [min_updates, max_updates] (tiny sets get enough updates to fit,
    large ones a bounded budget)."""
    return int(min(ft["max_updates"], max(ft["min_updates"], math.ceil(ft["epochs"] * n / ft["batch_size"]))))


# ---- data ----------------------------------------------------------------------------------------------------


def _data_hash(settings: TransferSettings) -> str:
    return config_hash({"data": settings.data})


def prepare_data(settings: TransferSettings, out: Path, echo=print) -> Path:
    """Tokenizer, vocabulary and token ids of every corpus, once per data setting, cached as
    ``OUT/data/<hash>/prepared.pt``; returns that path."""
    import torch

    from modules.data.corpora import read_lines
    from modules.data.text_datamodule import TextDataModule
    from modules.data.vocab import Vocab, make_tokenizer

    path = Path(out) / "data" / _data_hash(settings) / DATA_FILE
    if path.exists():
        return path
    d = settings.data
    start = time.perf_counter()
    try:
        general = [line for p in d["general"] for line in read_lines(p, d["general_encoding"])]
    except GvtError as err:
        raise ConfigError(f"transfer.data.general: {err}") from None
    general = general[: d["max_general"]]
    if not 0 <= d["general_val"] < len(general):
        raise ConfigError(f"transfer.data.general_val={d['general_val']} must lie in [0, {len(general)}) (the general "
                          "sentences read)")
    # pretraining's validation sentences: a seeded draw, so both corpora are in it, never trained on
    held = set(random.Random(d["split_seed"]).sample(range(len(general)), d["general_val"]))
    general_val = [text for i, text in enumerate(general) if i in held]
    general = [text for i, text in enumerate(general) if i not in held]
    # MR's fixed split: TextDataModule's stratified carving (split_seed), the package's one held-out rule
    mr_module = TextDataModule(train=dict(d["mr"]), format="labeled", encoding=d["mr_encoding"],
                               val_fraction=d["val_fraction"], test_fraction=d["test_fraction"],
                               split_seed=d["split_seed"])
    try:
        mr = mr_module._read_splits()  # {split: [(label, sentence)]}, before any tokenizer sees them
    except GvtError as err:
        raise ConfigError(f"transfer.data.mr: {err}") from None
    mr["train"] = _interleaved_prefix(mr["train"], d["max_mr_train"])
    mr["test"] = _interleaved_prefix(mr["test"], d["max_mr_test"])
    labels = sorted({label for label, _ in mr["train"]})
    if len(labels) < 2:
        raise ConfigError(f"transfer.data.mr: the training split has only the labels {labels}; two are needed")

    tokenizer = make_tokenizer(d["tokenizer"], lowercase=d["lowercase"], bpe_vocab_size=d["bpe_vocab_size"])
    # one tokenizer and vocabulary for the language model and the classifiers, from training text only
    tokenizer.fit(general + [text for _, text in mr["train"]])
    n = d["max_len"]
    tok = lambda text: tokenizer.tokenize(text)[:n]  # noqa: E731
    general_tokens = [tok(text) for text in general]
    general_val_tokens = [tok(text) for text in general_val]
    mr_tokens = {split: [(label, tok(text)) for label, text in recs] for split, recs in mr.items()}
    vocab = Vocab.build(general_tokens + [t for _, t in mr_tokens["train"]], labels=labels, min_freq=d["min_freq"])
    index = {label: k for k, label in enumerate(vocab.labels)}
    prepared = {
        "vocab": vocab.state_dict(),
        "tokenizer": tokenizer.state_dict(),
        "general": [vocab.encode(t) for t in general_tokens if t],
        "general_val": [vocab.encode(t) for t in general_val_tokens if t],
        "mr": {split: [(index[label], vocab.encode(t)) for label, t in items if t] for split, items in mr_tokens.items()},
    }
    with atomic_open(path, "wb") as f:
        torch.save(prepared, f)
    sizes = ", ".join(f"{split} {len(v)}" for split, v in prepared["mr"].items())
    echo(f"transfer: data prepared in {time.perf_counter() - start:.1f}s: {len(prepared['general'])} general "
         f"sentences (+ {len(prepared['general_val'])} held out), MR {sizes}, vocabulary {len(vocab)} ({d['tokenizer']}) -> {path}")
    return path


def _interleaved_prefix(records: list, n: Optional[int]) -> list:
    """The first n records taken in turn from each label (records come grouped by label), in their file order;
    all of them for None. Caps a split without leaving a class out."""
    if n is None or n >= len(records):
        return list(records)
    by_label: dict = {}
    for i, (label, _) in enumerate(records):
        by_label.setdefault(label, []).append(i)
    turns = sorted((rank, label, i) for label, idx in by_label.items() for rank, i in enumerate(idx))
    return [records[i] for i in sorted(i for _, _, i in turns[:n])]


_PREPARED: dict[str, dict] = {}


def load_prepared(path: Path) -> dict:
    import torch

    key = str(path)
    if key not in _PREPARED:  # once per worker process
        _PREPARED[key] = torch.load(path, weights_only=True)
    return _PREPARED[key]


def balanced_subset(train: list[tuple[int, list[int]]], n: Optional[int], seed: int) -> list[tuple[int, list[int]]]:
    """n examples of the training split, n/2 per class, seeded by ``seed`` and nested (the subset of n is the
    start of the subset of any larger n for the same seed); None: the whole split."""
    if n is None:
        return list(train)
    by_class: dict[int, list[int]] = {}
    for i, (label, _) in enumerate(train):
        by_class.setdefault(label, []).append(i)
    per_class = n // len(by_class)
    picked = []
    for label in sorted(by_class):
        idx = by_class[label]
        if per_class > len(idx):
            raise ConfigError(f"transfer.label_sizes: {n} labelled examples need {per_class} of class {label}, but "
                              f"the MR training split has {len(idx)}")
        order = list(idx)
        random.Random(seed * 1009 + label).shuffle(order)
        picked += order[:per_class]
    return [train[i] for i in sorted(picked)]


class PreparedData(SequenceDataModule):
    """Splits already encoded with the ablation's one vocabulary; batching and seeding are the package's."""

    def __init__(self, splits: dict, vocab, batch_size: int, seed: int, eval_batch_size: int):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
        self._given = (splits, vocab)

    def build(self):
        return self._given


def _lm_examples(sentences: Sequence[list[int]]):
    from modules.data.batch import Example
    from modules.data.vocab import NULL_ID

    return [Example([NULL_ID], ids) for ids in sentences]


def _labelled_examples(items: Sequence[tuple[int, list[int]]]):
    from modules.data.batch import Example
    from modules.data.vocab import NULL_ID

    # src stays <null>: the classifier reads only tgt, and no label token may sit anywhere in its batch
    return [Example([NULL_ID], ids, label) for label, ids in items]


# ---- runs ----------------------------------------------------------------------------------------------------


def _size_label(size: Size) -> str:
    return ALL if size == ALL else str(size)


def lm_spec(settings: TransferSettings, body: str, seed: int, data_path: Path, init: str = "general") -> dict:
    """A language model's spec; ``init`` "general": pretrained on the general corpus, then adapted (the pretrained
    arm's); "none": adapted on MR's text from its random initialisation (the adapt_only arm's)."""
    spec = {"kind": "lm", "body": body, "seed": seed, "init": init, "data": settings.data,
            "body_args": settings.body_args[body], "pretrain": settings.pretrain if init == "general" else None,
            "adapt": settings.adapt, "optimizer": settings.optimizer}
    prefix = "lm" if init == "general" else "lm-adapt-only"
    spec["key"] = f"{prefix}__{body}__seed{seed}__{config_hash(spec)}"
    spec.update(data_path=str(data_path), threads=settings.threads, eval_batch_size=settings.eval_batch_size,
                accelerator=settings.accelerator)
    return spec


def classifier_spec(settings: TransferSettings, body: str, arm: str, seed: int, size: Size, lm: Optional[dict],
                    lr: float, data_path: Path, kind: str = "classifier") -> dict:
    """One classifier run; ``lm``: the arm's language model spec (None for scratch); ``lr``: the arm's peak rate
    (the pilot's choice); ``kind`` "pilot" for the pilot's runs."""
    ul = settings.ulmfit
    recipe = (dict(lr_factor=float(ul["lr_factor"]), unfreeze_every=int(ul["unfreeze_every"]))
              if arm in ul.get("arms", []) else dict(lr_factor=1.0, unfreeze_every=0))
    spec = {"kind": kind, "body": body, "arm": arm, "seed": seed, "size": _size_label(size), "data": settings.data,
            "body_args": settings.body_args[body], "finetune": settings.finetune, "recipe": recipe, "lr": float(lr),
            "optimizer": settings.optimizer, "lm": lm["key"] if lm is not None else None}
    prefix = "clf" if kind == "classifier" else "pilot"
    spec["key"] = f"{prefix}__{body}__{arm}__n{_size_label(size)}__seed{seed}__{config_hash(spec)}"
    spec.update(data_path=str(data_path), primary_body=settings.primary_body,
                primary_size=settings.primary_size, eval_batch_size=settings.eval_batch_size, threads=settings.threads,
                accelerator=settings.accelerator)
    return spec


def _run_folder(out: Path, key: str) -> Path:
    return Path(out) / "runs" / key


def _trainer(updates: int, loggers, folder: Path, val_every: Optional[int] = None, callbacks=(),
             accelerator: str = "cpu"):
    """A trainer for ``updates`` updates; with ``val_every``, a validation every that many updates (across epoch
    ends), else none."""
    import pytorch_lightning as pl

    validation = (dict(val_check_interval=int(val_every), check_val_every_n_epoch=None) if val_every
                  else dict(limit_val_batches=0))
    return pl.Trainer(accelerator=accelerator, devices=1, logger=loggers, max_steps=updates, max_epochs=-1,
                      callbacks=list(callbacks), **validation, num_sanity_val_steps=0, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=max(1, min(50, updates // 10)), default_root_dir=str(folder))


def _loggers(name: str, out: Path, job_type: str, tags: list[str], wandb_mode: str, config: dict):
    from modules.tracking import Tracking

    return Tracking(name=name, group=f"transfer-{Path(out).resolve().name}", job_type=job_type, tags=tags,
                    wandb_mode=wandb_mode).loggers(save_dir=str(Path(out) / "runs"), family=job_type, config=config)


def _finish(loggers, row: dict) -> None:
    """The row's scalars into the W&B run's summary (``result/...``), then close it so the next fit is a new run."""
    from experiments.core.results import flat_scalars

    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        try:
            run = logger.experiment
            run.summary.update({f"result/{k}": v for k, v in flat_scalars(row).items()
                                if isinstance(v, (int, float, bool, str))})
            run.finish()
        except Exception as err:  # tracking must never take a finished run down
            print(f"transfer: could not finish the W&B run: {err}", file=sys.stderr)


def _test(trainer, model, dm) -> dict:
    return {k.split("/", 1)[1]: float(v) for k, v in trainer.test(model, datamodule=dm, verbose=False)[0].items()}


def run_lm(spec: dict, out: str, wandb_mode: str) -> list[dict]:
    """Pretrain (``init`` "general") and adapt one language model; write its body weights, then its row.
    -> [row] (or [] if done). Pretraining stops at the target validation NLL or the cap; adaptation stops early
    on MR's validation NLL; each keeps its best validation weights."""
    import pytorch_lightning as pl
    import torch

    from experiments.core.runner import _quiet_lightning
    from modules.data.vocab import Vocab
    from modules.models.classifier import LanguageModel

    out = Path(out)
    table = ResultsTable(out)
    if spec["key"] in table.keys():
        return []
    start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(int(spec.get("threads") or 1))
    data = load_prepared(Path(spec["data_path"]))
    vocab = Vocab.from_state_dict(data["vocab"])
    folder = _run_folder(out, spec["key"])
    folder.mkdir(parents=True, exist_ok=True)
    held_out = _lm_examples([ids for _, ids in data["mr"]["test"]])  # the target domain's test sentences
    mr_val = _lm_examples([ids for _, ids in data["mr"]["val"]])
    stages = [("adapt", _lm_examples([ids for _, ids in data["mr"]["train"]]), mr_val)]
    if spec.get("init", "general") == "general":
        stages.insert(0, ("pretrain", _lm_examples(data["general"]), _lm_examples(data["general_val"])))
    body, seed = spec["body"], int(spec["seed"])
    nll, updates, stops, fit_time = {}, {}, {}, 0.0
    accelerator = spec.get("accelerator", "cpu")
    with _quiet_lightning():
        pl.seed_everything(seed, workers=True, verbose=False)
        model = None
        for stage, train, val in stages:
            cfg = spec[stage]
            previous = model
            model = LanguageModel(len(vocab), body=body, body_args=spec["body_args"], lr=cfg["lr"], **spec["optimizer"])
            if previous is not None:  # adaptation continues the pretrained weights with a fresh optimiser
                model.net.load_state_dict(previous.net.state_dict())
            dm = PreparedData({"train": train, "val": val, "test": held_out}, vocab, cfg["batch_size"], seed,
                              spec.get("eval_batch_size", 256))
            loggers = _loggers(f"{spec['key']}__{stage}", out, f"lm-{stage}", [body, f"seed{seed}"], wandb_mode,
                               {**spec, "stage": stage})
            # pretraining: to the stated target or the cap (no patience); adaptation: early stopping
            keep = (KeepBestOnValidation("val/nll_per_token", "min", patience=None, target=float(cfg["target_nll"]))
                    if stage == "pretrain" else
                    KeepBestOnValidation("val/nll_per_token", "min", patience=int(cfg["patience"])))
            trainer = _trainer(int(cfg["max_updates"]), loggers, folder, val_every=int(cfg["val_every"]),
                               callbacks=[keep], accelerator=accelerator)
            if previous is None:
                nll["init"] = _test(trainer, model, dm)["nll_per_token"]
                producible = int((~model.banned).sum())  # the label tokens are banned by now (setup ran)
            if cfg["max_updates"] > 0:
                t0 = time.perf_counter()
                trainer.fit(model, datamodule=dm)
                fit_time += time.perf_counter() - t0
            updates[stage] = int(trainer.global_step)
            stops[stage] = {"val_nll": keep.best, "best_step": keep.best_step, "val_checks": keep.checks,
                            "curve": keep.history,
                            "stop": ("target" if keep.reached is not None else
                                     "cap" if trainer.global_step >= cfg["max_updates"] else "patience")}
            if stage == "pretrain":
                stops[stage]["target_nll"] = float(cfg["target_nll"])
            after = {"pretrain": "pretrained", "adapt": "adapted"}[stage]
            nll[after] = _test(trainer, model, dm)["nll_per_token"]
            _finish(loggers, {"key": spec["key"], "stage": stage, "nll_mr_test": nll[after]})
    with atomic_open(folder / "body.pt", "wb") as f:
        torch.save(model.body.state_dict(), f)
    row = {"key": spec["key"], "kind": "lm", "body": body, "seed": seed, "init": spec.get("init", "general"),
           "config_hash": spec["key"].rsplit("__", 1)[1], "nll_mr_test": nll, "updates": updates, "stages": stops,
           "uniform_nll": math.log(producible), "optimizer": model.optimizer_settings(),
           "num_parameters": sum(p.numel() for p in model.body.parameters()),
           "fit_time_s": fit_time, "wall_time_s": time.perf_counter() - start,
           "cpu_time_s": time.process_time() - cpu_start}
    table.add(row)
    return [row]


def run_classifiers(specs: list[dict], out: str, wandb_mode: str) -> list[dict]:
    """The classifier runs of one (body, arm, seed[, rate]), one per labelled-set size; each row is added when
    done. The rows' kind is the spec's (``classifier``, or ``pilot`` for the learning-rate pilot)."""
    import pytorch_lightning as pl
    import torch

    from experiments.core.runner import _quiet_lightning
    from modules.data.vocab import Vocab
    from modules.models.classifier import SentenceClassifier
    from modules.ulmfit import fully_unfrozen_at

    out = Path(out)
    table = ResultsTable(out)
    done = table.keys()
    rows = []
    for spec in specs:
        if spec["key"] in done:
            continue
        start, cpu_start = time.perf_counter(), time.process_time()
        torch.set_num_threads(int(spec.get("threads") or 1))
        data = load_prepared(Path(spec["data_path"]))
        vocab = Vocab.from_state_dict(data["vocab"])
        seed, ft, recipe = int(spec["seed"]), spec["finetune"], spec["recipe"]
        train = balanced_subset(data["mr"]["train"], None if spec["size"] == ALL else int(spec["size"]), seed)
        test = _labelled_examples(data["mr"]["test"])
        counts = [sum(1 for label, _ in data["mr"]["train"] if label == k) for k in range(len(vocab.labels))]
        majority = max(range(len(counts)), key=lambda k: counts[k])
        majority_accuracy = sum(1 for label, _ in data["mr"]["test"] if label == majority) / len(data["mr"]["test"])
        updates = finetune_updates(ft, len(train))
        with _quiet_lightning():
            pl.seed_everything(seed, workers=True, verbose=False)
            model = SentenceClassifier(len(vocab), num_classes=len(vocab.labels), body=spec["body"],
                                       body_args=spec["body_args"], head_dropout=ft["head_dropout"], lr=spec["lr"],
                                       lr_factor=recipe["lr_factor"], schedule=ft.get("schedule", "constant"),
                                       total_updates=updates, cut_frac=ft.get("cut_frac", 0.1),
                                       ratio=ft.get("ratio", 32.0), unfreeze_every=recipe["unfreeze_every"],
                                       **spec["optimizer"])
            if spec["lm"] is not None:
                model.load_body(torch.load(_run_folder(out, spec["lm"]) / "body.pt", weights_only=True))
            # early stopping reads MR's validation split; the test split is scored once, on the kept weights
            dm = PreparedData({"train": _labelled_examples(train), "val": _labelled_examples(data["mr"]["val"]),
                               "test": test}, vocab, ft["batch_size"], seed, spec["eval_batch_size"])
            keep_best = KeepBestOnValidation("val/accuracy", "max", patience=int(ft["patience"]),
                                             min_steps=fully_unfrozen_at(len(model.groups), recipe["unfreeze_every"]))
            loggers = _loggers(spec["key"], out, f"{spec['kind']}-{spec['arm']}",
                               [spec["body"], spec["arm"], f"n{spec['size']}", f"seed{seed}"], wandb_mode, spec)
            trainer = _trainer(updates, loggers, _run_folder(out, spec["key"]), val_every=int(ft["val_every"]),
                               callbacks=[keep_best], accelerator=spec.get("accelerator", "cpu"))
            t0 = time.perf_counter()
            trainer.fit(model, datamodule=dm)
            fit_time = time.perf_counter() - t0
            scores = _test(trainer, model, dm)
        row = {"key": spec["key"], "kind": spec["kind"], "body": spec["body"], "arm": spec["arm"], "seed": seed,
               "size": spec["size"], "n_labels": len(train), "config_hash": spec["key"].rsplit("__", 1)[1],
               "lm": spec["lm"], "lr": spec["lr"], "recipe": recipe, "updates": int(trainer.global_step),
               "planned_updates": updates, "best_step": keep_best.best_step, "val_accuracy": keep_best.best,
               "val_checks": keep_best.checks, "accuracy": scores["accuracy"], "test_loss": scores["loss"],
               "num_test": len(test), "majority_accuracy": majority_accuracy, "primary_body": spec["primary_body"],
               "primary_size": spec["primary_size"], "optimizer": model.optimizer_settings(),
               "fit_time_s": fit_time, "wall_time_s": time.perf_counter() - start,
               "cpu_time_s": time.process_time() - cpu_start}
        _finish(loggers, row)
        table.add(row)
        rows.append(row)
    return rows


def plan_lms(settings: TransferSettings, data_path: Path) -> dict[tuple[str, int, str], dict]:
    """-> the language-model specs by (body, seed, arm), for the verdict seeds and the pilot seed."""
    return {(body, seed, arm): lm_spec(settings, body, seed, data_path, init)
            for seed in settings.lm_seeds for body in settings.bodies
            for arm, init in LM_ARMS.items() if arm in settings.arms}


def plan(settings: TransferSettings, data_path: Path, lr_choices: dict) -> tuple[list[dict], list[list[dict]]]:
    """-> the language-model specs, and the verdict's classifier jobs (lists of specs of one body, arm and seed),
    each arm at its rate ``lr_choices[body][arm]``."""
    lms = plan_lms(settings, data_path)
    jobs = [[classifier_spec(settings, body, arm, seed, size, lms.get((body, seed, arm)), lr_choices[body][arm],
                             data_path) for size in settings.label_sizes]
            for seed in settings.seeds for body in settings.bodies for arm in settings.arms]
    return list(lms.values()), jobs



def pilot_jobs(settings, data_path: Path) -> list[list[dict]]:
    """The pilot's classifier jobs: one per (body, arm, rate), its specs one per pilot size."""
    if settings.pilot is None:
        return []
    seed = int(settings.pilot["seed"])
    lms = plan_lms(settings, data_path)
    return [[classifier_spec(settings, body, arm, seed, size, lms.get((body, seed, arm)), lr, data_path,
                             kind="pilot") for size in settings.pilot["sizes"]]
            for body in settings.bodies for arm in settings.arms for lr in settings.pilot["lrs"]]


def write_choices(settings, out: Path, choices: dict) -> dict:
    """``OUT/pilot.json`` (the choices and every rate's score) and ``OUT/preregistration.json`` (C4's settings,
    SESOI, gates, pilot rule and the chosen rates, with their hash). -> the pre-registration. Refuses a folder
    whose earlier pre-registration chose other rates: the verdict rows there were run at those."""
    out = Path(out)
    prereg = preregistration_of(settings, choices["lr"])
    digest = hashlib.sha256(json.dumps(prereg, sort_keys=True, default=str).encode()).hexdigest()[:16]
    record = {"question": QUESTION, "hash": digest, "preregistration": prereg}
    path = out / "preregistration.json"
    if path.is_file():
        before = json.loads(path.read_text())
        if before.get("preregistration", {}).get("lr_choices") != choices["lr"]:
            raise ConfigError(f"{path}: the pilot now chooses {choices['lr']}, but this run folder was "
                              f"pre-registered with {before.get('preregistration', {}).get('lr_choices')}; use a new "
                              "--out folder")
    atomic_write_text(out / "pilot.json", json.dumps(
        {"pilot": settings.pilot, "lr": choices["lr"], "val_accuracy": choices["val_accuracy"]}, indent=2) + "\n")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record


def run(settings: TransferSettings, out: Path, *, workers: int = 2, wandb_mode: str = "offline",
        echo=print) -> list[dict]:
    """Run the ablation into ``out`` (resumably: runs with a row in ``out/results.jsonl`` are not redone) and
    return its rows. First every language model and the learning-rate pilot (``experiments.c4_transfer.pilot``:
    its choices go to ``out/pilot.json`` and ``out/preregistration.json``), then the verdict's classifiers at the
    chosen rates. A classifier job starts once its language model's row is in."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "transfer.json", json.dumps(settings.to_dict(), indent=2, sort_keys=True, default=str)
                      + "\n")
    data_path = prepare_data(settings, out, echo=echo)
    baseline_keys = run_baselines(settings, out, data_path, echo=echo)
    lms = list(plan_lms(settings, data_path).values())
    pilot = pilot_jobs(settings, data_path)

    def phase(name: str, lm_specs: list[dict], jobs: list[list[dict]]) -> None:
        done = ResultsTable(out).keys()
        todo_lms = [s for s in lm_specs if s["key"] not in done]
        todo_jobs = [job for job in ([s for s in job if s["key"] not in done] for job in jobs) if job]
        total = len(todo_lms) + sum(len(job) for job in todo_jobs)
        skipped = len(lm_specs) + sum(len(job) for job in jobs) - total
        if skipped:
            echo(f"transfer ({name}): {skipped} runs already in {out / 'results.jsonl'}; running the other {total}")
        if total:
            bar = tqdm(total=total, desc=f"transfer {name}", unit="run", dynamic_ncols=True, file=sys.stderr)
            try:
                _schedule(todo_lms, todo_jobs, out, workers, wandb_mode, bar, done)
            finally:
                bar.close()

    phase("language models and pilot", lms, pilot)
    pilot_keys = {s["key"] for job in pilot for s in job}
    choices = choose_rates(settings, [r for r in ResultsTable(out).rows() if r["key"] in pilot_keys])
    write_choices(settings, out, choices)
    lms, jobs = plan(settings, data_path, choices["lr"])
    done = ResultsTable(out).keys()
    missing = [job for job in jobs if job[0]["lm"] is not None and job[0]["lm"] not in done]
    for job in missing:  # its language model failed above (the run folder's errors say why); rerun to retry
        echo(f"transfer: not run: {len(job)} {job[0]['body']} {job[0]['arm']} classifiers of seed {job[0]['seed']} "
             f"(no language model {job[0]['lm']})")
    phase("verdict", [], [job for job in jobs if job not in missing])
    keys = {s["key"] for s in lms} | {s["key"] for job in jobs for s in job} | baseline_keys | pilot_keys
    return [r for r in ResultsTable(out).rows() if r["key"] in keys]


def run_baselines(settings: TransferSettings, out: Path, data_path: Path, echo=print) -> set[str]:
    """The counted baselines at every labelled size and seed, in-process (about 2 CPU-minutes for the lecture
    preset, mostly logistic regression on the whole split), each row added to ``out/results.jsonl`` unless there;
    -> their keys."""
    from experiments.c4_transfer.baselines import baseline_rows
    from modules.data.vocab import Vocab

    data = load_prepared(Path(data_path))
    table = ResultsTable(out)
    suffix = _data_hash(settings)
    sizes = [(_size_label(x), None if x == ALL else int(x)) for x in settings.label_sizes]
    keys = {f"baseline__{m}__n{label}__seed{seed}__{suffix}" for m in ("naive_bayes", "logistic")
            for label, _ in sizes for seed in settings.seeds}
    if keys <= table.keys():
        return keys
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = baseline_rows(data["mr"]["train"], data["mr"]["test"], len(Vocab.from_state_dict(data["vocab"])), sizes,
                         settings.seeds, balanced_subset)
    done = table.keys()
    for row in rows:
        row["key"] = f"{row['key']}__{suffix}"
        if row["key"] not in done:
            table.add(row)
    echo(f"transfer: counted baselines (Naive Bayes, logistic regression) in {time.perf_counter() - start:.0f}s "
         f"({time.process_time() - cpu_start:.0f} CPU-s)")
    return keys


def _schedule(lms, jobs, out: Path, workers: int, wandb_mode: str, bar, done: set) -> None:
    waiting: dict[str, list[list[dict]]] = {}  # a language model's key -> the pretrained jobs that need it
    ready = []
    for job in jobs:
        needs = job[0]["lm"]
        if needs is not None and needs not in done:
            waiting.setdefault(needs, []).append(job)
        else:
            ready.append(job)
    tasks = [("lm", spec) for spec in lms] + [("clf", job) for job in ready]  # language models first

    def settle(task, rows_or_error) -> list:
        kind, payload = task
        if isinstance(rows_or_error, Exception):
            key = payload["key"] if kind == "lm" else payload[0]["key"]
            ResultsTable(out).add_error(key, f"{type(rows_or_error).__name__}: {rows_or_error}")
            bar.write(f"  FAILED {key}: {rows_or_error}", file=sys.stderr)
            if kind == "lm":
                for job in waiting.pop(payload["key"], []):
                    bar.write(f"  not run: {len(job)} {job[0]['body']} pretrained classifiers of seed "
                              f"{job[0]['seed']} (their language model failed)", file=sys.stderr)
            return []
        for row in rows_or_error:
            bar.update(1)
            bar.write("  " + _summary(row), file=sys.stderr)
        return [("clf", job) for job in waiting.pop(payload["key"], [])] if kind == "lm" else []

    run_tasks(tasks, functools.partial(_run_task, out=str(out), wandb_mode=wandb_mode), settle, workers)


def _run_task(task: tuple[str, object], out: str, wandb_mode: str) -> list[dict]:
    """One scheduled task (in a worker or in-process): a language model ("lm", its spec) or one seed's classifiers
    ("clf", their specs)."""
    kind, payload = task
    return run_lm(payload, out, wandb_mode) if kind == "lm" else run_classifiers(payload, out, wandb_mode)


def _summary(row: dict) -> str:
    if row["kind"] == "lm":
        n, stop = row["nll_mr_test"], row.get("stages", {}).get("pretrain")
        val = "-" if stop is None or stop["val_nll"] is None else f"{stop['val_nll']:.2f}"
        pre = (f" -> pretrained {n['pretrained']:.2f} (general val {val}, target "
               f"{stop['target_nll']:.2f}, stopped by {stop['stop']} at {row['updates']['pretrain']})" if stop else "")
        return (f"{row['key'].rsplit('__', 1)[0]}  MR test NLL/token {n['init']:.2f}{pre} -> adapted "
                f"{n.get('adapted', float('nan')):.2f} (uniform {row['uniform_nll']:.2f})  {row['wall_time_s']:.1f}s")
    return (f"{row['key'].rsplit('__', 1)[0]}  accuracy {row['accuracy']:.3f} (majority "
            f"{row['majority_accuracy']:.3f})  {row['updates']} updates  {row['wall_time_s']:.1f}s")


# ---- verdict -------------------------------------------------------------------------------------------------


def _classifier_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("kind") == "classifier"]


def _sizes(rows: list[dict]) -> list[str]:
    """Size labels in increasing order of labelled examples (``all`` last)."""
    order = {}
    for r in rows:
        order[r["size"]] = max(order.get(r["size"], 0), r["n_labels"])
    return sorted(order, key=lambda s: (s == ALL, order[s]))


def accuracy_by_seed(rows: list[dict], body: str, arm: str, size: str) -> dict[int, float]:
    return {r["seed"]: float(r["accuracy"]) for r in _classifier_rows(rows)
            if r["body"] == body and r["arm"] == arm and r["size"] == size and math.isfinite(r["accuracy"])}


def _difference(rows, body, size, arm: str = "pretrained", other: str = "scratch") -> list[float]:
    """Per seed (paired), accuracy(arm) - accuracy(other)."""
    pre, scr = accuracy_by_seed(rows, body, arm, size), accuracy_by_seed(rows, body, other, size)
    return [pre[s] - scr[s] for s in sorted(pre) if s in scr]


def labels_to_match(rows: list[dict], body: str, primary: str) -> dict[int, Optional[str]]:
    """Per seed: the smallest labelled size at which scratch reaches the pretrained classifier's accuracy at
    ``primary`` (None: not at any size run). Descriptive."""
    target = accuracy_by_seed(rows, body, "pretrained", primary)
    out = {}
    for seed, goal in sorted(target.items()):
        out[seed] = None
        for size in _sizes(_classifier_rows(rows)):
            acc = accuracy_by_seed(rows, body, "scratch", size).get(seed)
            if acc is not None and acc >= goal:
                out[seed] = size
                break
    return out


def baseline_accuracy(rows: list[dict], size: str) -> dict[str, float]:
    """The counted baselines' mean accuracy over seeds at ``size``, per method (``transfer_baselines``)."""
    by_method: dict[str, list[float]] = {}
    for r in rows:
        if r.get("kind") == "baseline" and r["size"] == size:
            by_method.setdefault(r["method"], []).append(float(r["accuracy"]))
    return {m: sum(v) / len(v) for m, v in sorted(by_method.items())}


def baseline_gate(rows: list[dict], body: str, largest: str, alpha: float) -> tuple[list[str], str]:
    """C4's gate: at the largest labelled size both arms of the primary cell (``GATED_ARMS``: pretrained and
    scratch) have t intervals over seeds above the best counted baseline's mean accuracy there. -> (the reasons it fails, empty if it holds; the text saying it holds). Every
    margin (arm mean - baseline, interval low - baseline) is printed either way."""
    baselines = baseline_accuracy(rows, largest)
    if not baselines:
        return [f"no counted baseline rows at {largest} labels (the gate cannot be checked)"], ""
    method, best = max(baselines.items(), key=lambda kv: kv[1])
    reasons, margins = [], []
    for arm in GATED_ARMS:
        iv = t_interval(accuracy_by_seed(rows, body, arm, largest).values(), 1.0 - alpha)
        margin = (f"{arm} {iv.fmt(3)}, margin {iv.mean - best:+.3f} (interval low {iv.low - best:+.3f})"
                  if iv.defined else f"{arm} {iv.fmt(3)}")
        margins.append(margin)
        if not (iv.defined and iv.low > best):
            reasons.append(f"{margin} does not lie above the best counted baseline ({method} {best:.3f}) at "
                           f"{largest} labels")
    said = ", ".join(f"{m} {a:.3f}" for m, a in baselines.items())
    return reasons, f"both arms beat the counted baselines ({said}) at {largest} labels: {'; '.join(margins)}"


def verdict(rows: list[dict], *, alpha: float = 0.05, min_seeds: int = 3) -> Verdict:
    """Verdict C4 (module docstring) from the ablation's rows, by ``experiments.core.verdicts``' one rule."""
    settings = VerdictSettings(alpha=alpha, min_seeds=min_seeds)
    clf = _classifier_rows(rows)
    body = clf[0].get("primary_body", "lstm") if clf else "lstm"
    size = str(clf[0].get("primary_size", 100)) if clf else "100"
    margin = SESOI
    rule_text = (f"Per seed, on the {body} body: accuracy on the fixed MR test split of the pretrained-and-adapted "
                 f"classifier minus the same classifier trained from scratch (same seed, labelled subset, budget and "
                 f"optimiser), at {size} labelled examples; paired by seed, SESOI {margin} accuracy. Precondition: at "
                 f"the largest labelled size both arms beat the counted baselines (multinomial Naive Bayes and "
                 f"logistic regression on bags of words: each arm's interval over seeds lies above the better "
                 f"baseline's mean accuracy). Fine-tuning: ULMFiT's recipe for the arms with a language model, each "
                 f"arm's peak learning rate chosen by a pilot on its own seed. Secondary: the same difference at every "
                 f"other size; the adaptation-only arm against scratch and against pretrained at {size}; and "
                 f"(descriptive) the labels scratch needs to reach the pretrained accuracy at {size}.")
    primary = f"difference_n{size}"
    body_rows = [r for r in clf if r["body"] == body]
    sizes = _sizes(body_rows)
    cells: dict[str, Cell] = {}
    gate = None
    if not body_rows or size not in sizes or not _difference(rows, body, size):
        gate = f"not run: no paired {body} classifier rows at {size} labelled examples"
        cells[primary] = _not_run(f"acc(pretrained) - acc(scratch) at {size} labels", gate, margin)
    else:
        cells[primary] = Cell(f"acc(pretrained) - acc(scratch) at {size} labels, {body}", _difference(rows, body, size),
                              margin)
        largest = sizes[-1]
        reasons, met_text = baseline_gate(rows, body, largest, alpha)
        met = not reasons
        cells[primary].precondition_met = met
        cells[primary].precondition = met_text if met else "; ".join(reasons)
        if not met:
            gate = "precondition failed: " + "; ".join(reasons) + " (a classifier that does not beat counting words)"
    if _difference(rows, body, size, "adapt_only", "scratch"):  # what each stage of the recipe adds, descriptive
        cells[f"adapt_only_minus_scratch_n{size}"] = Cell(
            f"acc(adapt_only) - acc(scratch) at {size} labels, {body}", _difference(rows, body, size, "adapt_only"))
        cells[f"pretrained_minus_adapt_only_n{size}"] = Cell(
            f"acc(pretrained) - acc(adapt_only) at {size} labels, {body} (the general corpus's share)",
            _difference(rows, body, size, "pretrained", "adapt_only"))
    for other_body in sorted({r["body"] for r in clf}):
        for s in _sizes([r for r in clf if r["body"] == other_body]):
            name = f"difference_n{s}" + ("" if other_body == body else f"_{other_body}")
            if name != primary:
                cells[name] = Cell(f"acc(pretrained) - acc(scratch) at {s} labels, {other_body}",
                                   _difference(rows, other_body, s))
    details = []
    rates = sorted({(r["body"], r["arm"], r["lr"]) for r in clf if "lr" in r})
    if rates:
        details.append("- peak learning rates (the pilot's choices): "
                       + ", ".join(f"{b} {a} {lr:g}" for b, a, lr in rates))
    match = labels_to_match(rows, body, size)
    if match:
        said = ", ".join(f"seed {s}: {'more than any size run' if v is None else v}" for s, v in match.items())
        details.append(f"- labels scratch needs to reach the pretrained accuracy at {size} ({body}, descriptive): {said}")
    return _standard(QUESTION, CLAIM, rule_text, margin, primary, cells, gate, details, settings,
                     labels_to_match={str(k): v for k, v in match.items()})


# ---- report --------------------------------------------------------------------------------------------------


def report_section(rows: list[dict], out: Path) -> tuple[list[str], dict[str, Path]]:
    """The C4 section's Markdown lines (accuracy against labelled-set size per body and arm with seed intervals,
    the language models' NLL) and its figure ``transfer_accuracy.png`` in ``out``; never the verdict table."""
    out = Path(out)
    clf = _classifier_rows(rows)
    verdict_seeds = {r["seed"] for r in _classifier_rows(rows)}
    lms = [r for r in rows if r.get("kind") == "lm" and r["seed"] in verdict_seeds]  # the pilot seed's are not
    lines = ["## C4: transfer learning (ULMFiT) against training from scratch", ""]
    if not clf:
        return lines + ["not run: no classifier rows in this run folder", ""], {}
    seeds = sorted({r["seed"] for r in clf})
    arms = [a for a in ARMS if any(r["arm"] == a for r in clf)]
    lines += [f"Accuracy on the fixed MR test split ({clf[0]['num_test']} sentences; majority-class baseline "
              f"{clf[0]['majority_accuracy']:.3f}) against the number of labelled training sentences (balanced "
              f"subsets, seeded, nested), mean and 95% t interval over {len(seeds)} seeds ({', '.join(map(str, seeds))}). "
              "pretrained: body from the language model pretrained on COCO captions + Multi30k English and adapted "
              "on the MR training sentences, new head; adapt_only: body from a language model trained on the MR "
              "training sentences alone; both fine-tuned by ULMFiT's recipe (discriminative rates, slanted "
              "triangular schedule, gradual unfreezing). scratch: the same classifier from its random "
              "initialisation, every layer at one rate. Same subset, budget and early stopping for every arm, each "
              "at the peak rate its pilot chose. Each seed trains its own language models, so the intervals cover "
              "pretraining, adaptation and fine-tuning.", ""]
    figures = {}
    for body in sorted({r["body"] for r in clf}):
        body_rows = [r for r in clf if r["body"] == body]
        rates = ", ".join(f"{a} {next(r['lr'] for r in body_rows if r['arm'] == a):g}" for a in arms
                          if any("lr" in r and r["arm"] == a for r in body_rows))
        lines += [f"### {body}", "", f"Peak learning rates (the pilot's choices): {rates or 'not recorded'}.", "",
                  "| labelled | updates (most) | " + " | ".join(arms) + " | pretrained - scratch | Naive Bayes | "
                  "logistic regression |", "|---|---|" + "---|" * (len(arms) + 3)]
        for size in _sizes(body_rows):
            n = max(r["n_labels"] for r in body_rows if r["size"] == size)
            upd = max(r["updates"] for r in body_rows if r["size"] == size)
            accs = " | ".join(t_interval(accuracy_by_seed(rows, body, a, size).values()).fmt(3) for a in arms)
            diff = t_interval(_difference(rows, body, size))
            base = baseline_accuracy(rows, size)
            counted = " | ".join(f"{base[m]:.3f}" if m in base else "-" for m in ("naive_bayes", "logistic"))
            lines.append(f"| {n} | {upd} | {accs} | {diff.fmt(3)} | {counted} |")
        lines.append("")
    if lms:
        lines += ["Language models: NLL per token (nats, EOS counted, UNK not scored) of the MR test sentences, "
                  "mean and interval over the verdict seeds: untrained -> after pretraining -> after adaptation to "
                  "MR; uniform is the NLL of a model that knows nothing (log of the tokens it can produce). "
                  "Pretraining runs to its target "
                  "NLL on held-out general sentences or to its cap; adaptation stops early on MR's validation "
                  "sentences.", ""]
        for body in sorted({r["body"] for r in lms}):
            for init in ("general", "none"):
                b = [r for r in lms if r["body"] == body and r.get("init", "general") == init]
                if not b:
                    continue
                keys = ("init", "pretrained", "adapted") if init == "general" else ("init", "adapted")
                parts = [t_interval(r["nll_mr_test"].get(k) for r in b).fmt(3) for k in keys]
                upd = b[0]["updates"]
                what = "pretrained + adapted" if init == "general" else "adapt_only"
                said = f"{upd.get('adapt', 0)} adaptation updates"
                if init == "general" and b[0].get("stages", {}).get("pretrain"):
                    stops = [r["stages"]["pretrain"] for r in b]
                    reached = [s["val_nll"] for s in stops if s["val_nll"] is not None]
                    said = (f"pretraining to general validation NLL {stops[0]['target_nll']:g}: reached "
                            f"{', '.join(f'{v:.2f}' for v in reached)} after "
                            f"{', '.join(str(r['updates']['pretrain']) for r in b)} updates (stopped by "
                            f"{', '.join(s['stop'] for s in stops)}); " + said)
                lines.append(f"- {body}, {what} ({b[0]['num_parameters']:,} body parameters; {said}; uniform "
                             f"{b[0].get('uniform_nll', math.nan):.2f}): {' -> '.join(parts)}")
        lines += ["", "The NLL after pretraining measures how far the general corpus (image captions) is from movie "
                  "reviews; adaptation is the recipe's step for closing that gap.", ""]
    cpu = sum(float(r.get("cpu_time_s", math.nan)) for r in rows)
    if math.isfinite(cpu):
        lines += [f"Compute: {cpu / 60:.1f} CPU-minutes over all runs (one torch thread each).", ""]
    path = plot_accuracy(rows, out / "transfer_accuracy.png")
    figures["transfer_accuracy"] = path
    lines += [f"![accuracy against labelled-set size]({path.name})", ""]
    return lines, figures


def plot_accuracy(rows: list[dict], path: Path) -> Path:
    """Accuracy against labelled examples (log axis), one panel per body, both arms with seed intervals."""
    from matplotlib.figure import Figure

    clf = _classifier_rows(rows)
    bodies = sorted({r["body"] for r in clf})
    fig = Figure(figsize=(5 * len(bodies), 3.8))
    axes = fig.subplots(1, len(bodies), squeeze=False)[0]
    for ax, body in zip(axes, bodies):
        body_rows = [r for r in clf if r["body"] == body]
        for arm, colour in zip(ARMS, ("tab:blue", "tab:green", "tab:orange")):
            xs, means, lows, highs = [], [], [], []
            for size in _sizes(body_rows):
                iv = t_interval(accuracy_by_seed(rows, body, arm, size).values())
                if iv.n == 0:
                    continue
                xs.append(max(r["n_labels"] for r in body_rows if r["size"] == size))
                means.append(iv.mean)
                lows.append(iv.low if iv.defined else iv.mean)
                highs.append(iv.high if iv.defined else iv.mean)
            ax.plot(xs, means, "o-", color=colour, label=arm)
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.2)
        ax.axhline(body_rows[0]["majority_accuracy"], color="grey", ls="--", lw=1, label="majority class")
        ax.set_xscale("log")
        ax.set_xlabel("labelled training sentences")
        ax.set_ylabel("MR test accuracy")
        ax.set_title(body)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# ---- command line --------------------------------------------------------------------------------------------


def _verdict_lines(v: Verdict) -> list[str]:
    lines = [f"## Verdict {v.question}: {v.verdict}", "", f"Claim: {v.claim}", "", f"Rule: {v.rule}", "",
             f"Evidence: {v.evidence}", "", "| cell | estimate and interval | SESOI |", "|---|---|---|"]
    for name, cell in v.cells.items():
        lines.append(f"| {cell.description} | {cell.fmt(3)} | {'' if cell.margin is None else cell.margin} |")
    return lines + [""] + v.details + [""]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gvt ablate transfer",
        description="C4: ULMFiT (pretrain a language model on COCO + Multi30k English, adapt it on MR, fine-tune a "
                    "sentiment classifier) against the same classifier from scratch, at labelled-set sizes 50 to all; "
                    "writes OUT/results.jsonl, OUT/report/report.md and OUT/report/verdicts.json.")
    parser.add_argument("--preset", default="lecture", choices=list(PRESETS),
                        help="lecture (2 CPU cores), gpu (larger bodies and pretraining, one GPU), smoke (tests)")
    parser.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/transfer/PRESET); rerun to resume")
    parser.add_argument("--seeds", nargs="+", metavar="S", help="seeds (default: the preset's)")
    parser.add_argument("--bodies", nargs="+", metavar="BODY", help=f"bodies among {', '.join(BODIES)} (default: "
                                                                    "the preset's)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="runs at once (default 2)")
    parser.add_argument("--wandb-mode", default="offline", choices=["auto", "online", "offline", "disabled"])
    args = parser.parse_args(argv)
    words = lambda values: [x for v in values for x in str(v).replace(",", " ").split()]  # noqa: E731
    try:
        settings = PRESETS[args.preset]()
        if args.seeds:
            settings = replace(settings, seeds=[int(s) for s in words(args.seeds)])
        if args.bodies:
            bodies = words(args.bodies)
            settings = replace(settings, bodies=bodies,
                               primary_body=settings.primary_body if settings.primary_body in bodies else bodies[0])
        out = Path(args.out or f"runs/transfer/{args.preset}")
        start = time.perf_counter()
        rows = run(settings, out, workers=args.workers, wandb_mode=args.wandb_mode,
                   echo=lambda m: print(m, file=sys.stderr))
        report = out / "report"
        lines, _ = report_section(rows, report)
        v = verdict(rows)
        atomic_write_text(report / "report.md", "\n".join(["# C4: transfer learning", ""] + lines + _verdict_lines(v)))
        atomic_write_text(report / "verdicts.json", json.dumps({QUESTION: v.to_json()}, indent=2, default=str) + "\n")
        print(f"C4: {v.verdict}: {v.evidence}")
        print(f"report: {report / 'report.md'} ({time.perf_counter() - start:.0f}s)")
    except GvtError as err:  # bad input: one line (anything else is a bug and keeps its traceback)
        print(f"gvt ablate transfer: error: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = ["PRESETS", "SESOI", "baseline_gate", "preregistration", "run_baselines", "TransferSettings", "balanced_subset", "finetune_updates", "main", "prepare_data",
           "report_section", "run", "verdict"]
