"""C4's settings: the claim, its SESOI, the arms, the presets (lecture, gpu, smoke) and the pre-registration
(the run: experiments.c4_transfer.transfer)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Union

from experiments.core.presets import GENERATOR_OPTIMIZER
from modules.errors import ConfigError


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
