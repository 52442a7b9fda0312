"""The transfer ablation (C4): the language-model bodies and heads, the two LightningModules, the data preparation
on a corpus the test writes (and on the real corpora when they are there), the labelled subsets, the settings'
checks, and a resumable end-to-end run."""

import gzip
import json
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from experiments.c4_transfer import transfer as T
from experiments.c4_transfer import baselines as B
from experiments.c4_transfer import data as TD
from experiments.c4_transfer import report as TR
from experiments.c4_transfer import settings as TS
from experiments.c4_transfer import verdict as TV
from experiments.core.runner import _quiet_lightning
from modules.callbacks import KeepBestOnValidation
from modules.data.batch import Example, collate
from modules.data.vocab import NULL_ID, UNK_ID, Vocab
from modules.errors import ConfigError
from modules.models.classifier import LanguageModel, SentenceClassifier
from modules.nets.classifier import ClassifierNet, LanguageModelNet, concat_pool, make_body

V = 40
TINY = {"lstm": dict(emb_dim=8, hidden_dim=12, num_layers=1, dropout=0.0),
        "transformer": dict(d_model=8, n_heads=2, n_encoder_layers=1, d_ff=16, dropout=0.0, max_len=32)}
BODIES = list(TINY)


def ids_and_mask(rows):
    batch = collate([Example([NULL_ID], r) for r in rows])
    return batch.tgt, batch.tgt_pad_mask


# ---- nets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", BODIES)
def test_body_never_reads_a_later_token(body):
    torch.manual_seed(0)
    net = make_body(body, V, **TINY[body]).eval()
    a, mask = ids_and_mask([[10, 11, 12, 13, 14]])
    b = a.clone()
    b[0, 4:] = torch.tensor([20, 21, 22])  # change the tokens from position 4 on
    with torch.no_grad():
        ha, hb = net(a, mask), net(b, mask)
    assert torch.allclose(ha[:, :4], hb[:, :4], atol=1e-6)
    assert not torch.allclose(ha[:, 4:], hb[:, 4:])


@pytest.mark.parametrize("body", BODIES)
def test_padding_changes_no_state_of_a_real_position(body):
    torch.manual_seed(0)
    net = make_body(body, V, **TINY[body]).eval()
    alone, alone_mask = ids_and_mask([[10, 11, 12]])
    padded, padded_mask = ids_and_mask([[10, 11, 12], [13, 14, 15, 16, 17, 18]])
    with torch.no_grad():
        h1 = net(alone, alone_mask)
        h2 = net(padded, padded_mask)
    assert torch.allclose(h1[0], h2[0, : h1.size(1)], atol=1e-5)


@pytest.mark.parametrize("body", BODIES)
def test_left_padding_is_refused(body):
    net = make_body(body, V, **TINY[body])
    ids = torch.tensor([[0, 10, 11]])
    with pytest.raises(ValueError, match="right-padded"):
        net(ids, ids.eq(0))


def test_concat_pool_reads_real_positions_only():
    states = torch.tensor([[[1.0, -1.0], [3.0, 5.0], [100.0, 100.0]]])  # (1, 3, 2), the last position is padding
    mask = torch.tensor([[False, False, True]])
    pooled = concat_pool(states, mask)
    assert pooled.tolist() == [[3.0, 5.0, 3.0, 5.0, 2.0, 2.0]]  # last real, max, mean


@pytest.mark.parametrize("body, tied", [("transformer", True), ("lstm", False)])
def test_lm_head_is_tied_to_the_embedding_where_the_sizes_allow(body, tied):
    net = LanguageModelNet(make_body(body, V, **TINY[body]), V)
    assert (net.head.weight is net.body.embedding.weight) == tied


def test_unknown_body_is_refused_by_name():
    with pytest.raises(ConfigError, match="model.body must be one of lstm, transformer"):
        LanguageModel(V, body="gru")


def test_bad_body_setting_is_refused_by_name():
    with pytest.raises(ConfigError, match="model.body_args for body 'lstm'"):
        LanguageModel(V, body="lstm", body_args={"hidden_size": 3})


# ---- the two modules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", BODIES)
def test_classifier_takes_the_language_models_body_and_a_new_head(body):
    torch.manual_seed(0)
    lm = LanguageModel(V, body=body, body_args=TINY[body])
    torch.manual_seed(1)
    clf = SentenceClassifier(V, body=body, body_args=TINY[body])
    head_before = clf.net.head.weight.clone()
    clf.load_body(lm.body.state_dict())
    for name, tensor in lm.body.state_dict().items():
        assert torch.equal(clf.body.state_dict()[name], tensor), name
    assert torch.equal(clf.net.head.weight, head_before)


def test_a_body_of_another_architecture_is_refused():
    lm = LanguageModel(V, body="lstm", body_args=TINY["lstm"])
    clf = SentenceClassifier(V, body="lstm", body_args={**TINY["lstm"], "hidden_dim": 6})
    with pytest.raises(ConfigError, match="does not fit this classifier's body"):
        clf.load_body(lm.body.state_dict())


def test_classifier_never_reads_the_condition():
    torch.manual_seed(0)
    clf = SentenceClassifier(V, body="lstm", body_args=TINY["lstm"]).eval()
    plain = collate([Example([NULL_ID], [10, 11, 12], 0), Example([NULL_ID], [13, 14], 1)])
    with_labels = collate([Example([5], [10, 11, 12], 0), Example([6], [13, 14], 1)])  # label tokens as src
    with torch.no_grad():
        assert torch.equal(clf(plain), clf(with_labels))


def test_language_model_loss_scores_neither_unk_nor_padding():
    torch.manual_seed(0)
    lm = LanguageModel(V, body="lstm", body_args=TINY["lstm"])
    batch = collate([Example([NULL_ID], [10, UNK_ID, 12]), Example([NULL_ID], [13])])
    _, targets, scored = lm._token_scores(batch)
    expected = (targets != 0) & (targets != UNK_ID)
    assert torch.equal(scored, expected)
    assert int(scored.sum()) == 5  # 10, 12, EOS and 13, EOS


# ---- data and subsets -----------------------------------------------------------------------------------------


def write_corpora(root: Path, n_general: int = 60, n_mr: int = 40) -> Path:
    """A tiny corpora folder in the layout of ../shared/data: COCO-like lines, Multi30k-like gzip, MR Latin-1."""
    (root / "coco").mkdir(parents=True)
    (root / "multi30k").mkdir()
    (root / "mr").mkdir()
    words = ["a", "man", "dog", "runs", "on", "the", "grass", "with", "red", "ball", "film", "movie"]
    lines = [" ".join(words[(i + k) % len(words)] for k in range(4 + i % 5)) for i in range(n_general)]
    (root / "coco" / "train.txt").write_text("\n".join(lines[: n_general // 2]), encoding="utf-8")
    with gzip.open(root / "multi30k" / "train.en.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(s.capitalize() + "." for s in lines[n_general // 2:]) + "\n")
    good = ["a great and moving film", "wonderful acting , a joy", "the best movie of the year"]
    bad = ["a dull and tedious film", "awful acting , a mess", "the worst movie of the year \x85"]
    (root / "mr" / "rt-polarity.pos").write_bytes("\n".join(good[i % 3] + f" {i}" for i in range(n_mr)).encode("latin-1"))
    (root / "mr" / "rt-polarity.neg").write_bytes("\n".join(bad[i % 3] + f" {i}" for i in range(n_mr)).encode("latin-1"))
    return root


def tiny_settings(**overrides) -> TS.TransferSettings:
    smoke = TS.smoke()
    data = {**smoke.data, "bpe_vocab_size": 300, "max_general": None, "general_val": 10, "max_mr_train": None,
            "max_mr_test": None}
    settings = replace(smoke, data=data, body_args=TINY, label_sizes=[4, TS.ALL], primary_size=4, seeds=[0],
                       pretrain=dict(target_nll=1.0, max_updates=2, val_every=1, batch_size=8, lr=1e-3),
                       adapt=dict(max_updates=2, val_every=1, patience=2, batch_size=8, lr=1e-3),
                       finetune=dict(batch_size=8, epochs=1, min_updates=3, max_updates=3, lr=1e-3, head_dropout=0.0,
                                     val_every=1, patience=2, schedule="stlr", cut_frac=0.1, ratio=32.0),
                       ulmfit=dict(arms=["pretrained", "adapt_only"], lr_factor=2.6, unfreeze_every=1),
                       pilot=dict(seed=1000, lrs=[1e-3, 3e-3], sizes=[4]),
                       eval_batch_size=64)
    return replace(settings, **overrides)


@pytest.fixture
def corpora(tmp_path, monkeypatch):
    root = write_corpora(tmp_path / "data")
    monkeypatch.setenv("GVT_DATA_DIR", str(root))
    return root


def test_prepared_data_share_one_vocabulary_and_a_stratified_fixed_split(corpora, tmp_path):
    settings = tiny_settings()
    path = TD.prepare_data(settings, tmp_path / "out", echo=lambda m: None)
    assert path.is_relative_to(tmp_path / "out")
    data = TD.load_prepared(path)
    assert data["vocab"]["labels"] == ["neg", "pos"]
    mr = data["mr"]
    assert {k: len(v) for k, v in mr.items()} == {"train": 56, "val": 8, "test": 16}  # 80 sentences, 10% / 20%
    assert sorted(label for label, _ in mr["test"]) == [0] * 8 + [1] * 8
    assert len(data["general"]) == 50 and len(data["general_val"]) == 10  # 60 sentences, 10 held out
    assert not set(map(tuple, data["general"])) & set(map(tuple, data["general_val"]))  # the 60 lines differ
    # one vocabulary fitted on both corpora: no training sentence of either has an unknown token
    assert all(UNK_ID not in ids for ids in data["general"])
    assert all(UNK_ID not in ids for _, ids in mr["train"])
    again = TD.prepare_data(replace(settings, seeds=[5]), tmp_path / "out", echo=lambda m: None)
    assert again == path  # cached per data setting, whatever the runs


def test_missing_corpus_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("GVT_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="transfer.data.general"):
        TD.prepare_data(tiny_settings(), tmp_path / "out", echo=lambda m: None)


@pytest.mark.parametrize("n", [2, 4, 10])
def test_balanced_subset_is_balanced_seeded_and_nested(n):
    train = [(i % 2, [10 + i]) for i in range(40)]
    subset = TD.balanced_subset(train, n, seed=3)
    assert len(subset) == n
    assert sum(label for label, _ in subset) == n // 2
    assert subset == TD.balanced_subset(train, n, seed=3)
    assert set(map(str, subset)) <= set(map(str, TD.balanced_subset(train, 20, seed=3)))
    others = [TD.balanced_subset(train, n, seed=s) for s in range(4, 9)]
    assert any(o != subset for o in others)


def test_balanced_subset_larger_than_a_class_is_refused():
    train = [(i % 2, [10 + i]) for i in range(10)]
    with pytest.raises(ConfigError, match="transfer.label_sizes: 12 labelled examples need 6 of class"):
        TD.balanced_subset(train, 12, seed=0)


@pytest.mark.parametrize("n, expected", [(10, 100), (500, 313), (2000, 600), (7464, 600)])  # 20 epochs of 32
def test_finetune_budget_is_epochs_clamped(n, expected):
    assert TS.finetune_updates(TS.lecture().finetune, n) == expected


@pytest.mark.parametrize("overrides, message", [
    (dict(label_sizes=[50, 101]), "transfer.label_sizes: 101"),
    (dict(bodies=["gru"]), "transfer.bodies: unknown body 'gru'"),
    (dict(primary_size=200), "transfer.primary_size=200"),
    (dict(bodies=["transformer"]), "transfer.primary_body='lstm'"),
    (dict(seeds=[]), "transfer.seeds is empty"),
    (dict(finetune=dict(batch_size=8, epochs=1, min_updates=5, max_updates=2, lr=1e-3, head_dropout=0.0,
                        val_every=5, patience=2)), "transfer.finetune needs"),
    (dict(finetune=dict(batch_size=8, epochs=1, min_updates=2, max_updates=5, lr=1e-3, head_dropout=0.0,
                        patience=2)), "transfer.finetune.val_every must be an integer >= 1, got None"),
    (dict(finetune=dict(batch_size=8, epochs=1, min_updates=2, max_updates=5, lr=1e-3, head_dropout=0.0,
                        val_every=5, patience=0)), "transfer.finetune.patience must be an integer >= 1, got 0"),
    (dict(pilot=dict(seed=1, lrs=[1e-3], sizes=[100])), "transfer.pilot.seed=1 is a verdict seed"),
    (dict(pilot=dict(seed=9, lrs=[], sizes=[100])), "transfer.pilot.lrs must be a non-empty list"),
    (dict(pilot=dict(seed=9, lrs=[1e-3], sizes=[64])), "transfer.pilot.sizes=[64] must be among label_sizes"),
    (dict(arms=["pretrained", "adapt_only"]), "transfer.arms"),
    (dict(arms=["pretrained", "scratch", "linear"]), "transfer.arms"),
    (dict(pretrain=dict(target_nll=0, max_updates=10, val_every=5, batch_size=8, lr=1e-3)),
     "transfer.pretrain.target_nll must be a number > 0"),
    (dict(pretrain=dict(target_nll=4.0, updates=10, val_every=5, batch_size=8, lr=1e-3)),
     "transfer.pretrain.max_updates must be an integer >= 0, got None"),
    (dict(adapt=dict(max_updates=10, val_every=5, batch_size=8, lr=1e-3)),
     "transfer.adapt.patience must be an integer >= 1, got None"),
    (dict(ulmfit=dict(arms=["scratch"], lr_factor=2.6, unfreeze_every=5)), "transfer.ulmfit.arms"),
    (dict(ulmfit=dict(arms=["pretrained"], lr_factor=2.6, unfreeze_every=50)),
     "transfer.ulmfit.unfreeze_every=50: the lstm body's last layer group would unfreeze at update 100, not before "
     "finetune.min_updates=100"),
    (dict(bodies=["lstm", "transformer"], ulmfit=dict(arms=["pretrained"], lr_factor=2.6, unfreeze_every=40)),
     "transfer.ulmfit.unfreeze_every=40: the transformer body's last layer group would unfreeze at update 120, not "
     "before finetune.min_updates=100"),
])
def test_bad_settings_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        replace(TS.lecture(), **overrides)


def test_command_line_refuses_an_unknown_body(capsys):
    from experiments.cli import main

    assert main("ablate", ["transfer", "--bodies", "gru", "--out", "unused"]) == 2
    assert "gvt ablate transfer: error: transfer.bodies: unknown body 'gru'" in capsys.readouterr().err


# ---- end to end -----------------------------------------------------------------------------------------------


def test_run_is_resumable_and_reports(corpora, tmp_path, monkeypatch):
    out = tmp_path / "out"
    settings = tiny_settings(bodies=["lstm"])
    rows = T.run(settings, out, workers=1, wandb_mode="disabled", echo=lambda m: None)
    kinds = sorted((r["kind"], r.get("arm") or r.get("method") or r.get("init"), r.get("size"), r["seed"])
                   for r in rows if r["kind"] != "pilot")
    assert kinds == sorted([("baseline", m, n, 0) for m in ("logistic", "naive_bayes") for n in ("4", "all")]
                           + [("classifier", a, n, 0) for a in TS.ARMS for n in ("4", "all")]
                           + [("lm", init, None, s) for init in ("general", "none") for s in (0, 1000)])
    pilot = [r for r in rows if r["kind"] == "pilot"]
    assert sorted((r["arm"], r["lr"], r["seed"]) for r in pilot) == sorted(
        (a, lr, 1000) for a in TS.ARMS for lr in (1e-3, 3e-3))  # every arm at every rate, on the pilot seed only
    lms = {(r["init"], r["seed"]): r for r in rows if r["kind"] == "lm"}
    lm, adapt_only = lms[("general", 0)], lms[("none", 0)]
    assert set(lm["nll_mr_test"]) == {"init", "pretrained", "adapted"}
    assert set(adapt_only["nll_mr_test"]) == {"init", "adapted"} and "pretrain" not in adapt_only["updates"]
    stop = lm["stages"]["pretrain"]
    assert stop["stop"] == "cap" and stop["target_nll"] == 1.0 and lm["updates"]["pretrain"] == 2  # 1.0: unreachable
    assert lm["uniform_nll"] == pytest.approx(math.log(len(Vocab.from_state_dict(
        TD.load_prepared(next((out / "data").rglob("prepared.pt")))["vocab"])) - 4 - 2))  # PAD BOS UNK NULL, 2 labels
    assert (out / "runs" / lm["key"] / "body.pt").is_file()
    clf = [r for r in rows if r["kind"] == "classifier"]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["majority_accuracy"] == 0.5 for r in clf)
    assert {r["n_labels"] for r in clf} == {4, 56}
    assert all(r["lm"] == lm["key"] for r in clf if r["arm"] == "pretrained")
    assert all(r["lm"] == adapt_only["key"] for r in clf if r["arm"] == "adapt_only")
    assert all(r["lm"] is None for r in clf if r["arm"] == "scratch")
    assert all(r["val_checks"] >= 1 and 1 <= r["best_step"] <= r["updates"] for r in clf)  # early stopping ran
    # the recipe: ULMFiT's for the arms with a language model, one rate and nothing frozen for scratch
    for r in clf:
        ulmfit = r["arm"] != "scratch"
        assert r["recipe"] == (dict(lr_factor=2.6, unfreeze_every=1) if ulmfit else dict(lr_factor=1.0,
                                                                                           unfreeze_every=0))
        assert r["optimizer"]["schedule"] == "stlr" and r["optimizer"]["group_lrs"][-1] == r["lr"]
    # the verdict runs use the pilot's choices, which are written down before them
    choices = json.loads((out / "pilot.json").read_text())["lr"]
    assert all(r["lr"] == choices["lstm"][r["arm"]] for r in clf)
    prereg = json.loads((out / "preregistration.json").read_text())
    assert prereg["preregistration"]["lr_choices"] == choices and prereg["hash"]

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(T, "run_lm", refuse)
    monkeypatch.setattr(T, "run_classifiers", refuse)
    again = T.run(settings, out, workers=1, wandb_mode="disabled", echo=lambda m: None)
    assert sorted(r["key"] for r in again) == sorted(r["key"] for r in rows)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 + 6 + 4 + 6  # baselines, classifiers, language models, pilot
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows if r["kind"] == "baseline")

    section, figures = TR.report_section(rows, out / "report")
    assert section[0].startswith("## C4")
    text = "\n".join(section)
    assert "adapt_only" in text and "stopped by cap" in text and "pilot's choices" in text
    assert figures["transfer_accuracy"].is_file()
    v = TV.verdict(rows)
    assert v.question == "C4" and v.verdict == "inconclusive"  # one seed
    assert "adapt_only_minus_scratch_n4" in v.cells and "pretrained_minus_adapt_only_n4" in v.cells
    json.dumps(v.to_json(), default=str)


# ---- counted baselines --------------------------------------------------------------------------------------


def _planted_sentiment(n, seed, signal=True):
    """Sentences of filler ids 10..49; with ``signal``, class 1 holds id 5 and class 0 id 6 once each."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        label = i % 2
        ids = [rng.randrange(10, 50) for _ in range(6)]
        if signal:
            ids.insert(rng.randrange(len(ids) + 1), 5 if label else 6)
        items.append((label, ids))
    return items


@pytest.mark.parametrize("method", ["naive_bayes", "logistic"])
def test_baselines_find_a_planted_sentiment_word(method):
    fit = getattr(B, method)
    assert fit(_planted_sentiment(200, 0), _planted_sentiment(400, 1), 50, 2) >= 0.98  # chance: 0.5


@pytest.mark.parametrize("method", ["naive_bayes", "logistic"])
def test_baselines_are_near_chance_without_a_signal(method):
    fit = getattr(B, method)
    acc = fit(_planted_sentiment(200, 0, signal=False), _planted_sentiment(2000, 1, signal=False), 50, 2)
    assert 0.44 < acc < 0.56  # 2,000 test sentences: chance +- about 2.7 standard errors


def test_naive_bayes_counts_repeats_and_smooths():
    # class 0: "7 7", class 1: "8"; V = 10, alpha 1: "7 8" scores 3/12 * 1/12 for class 0 against 1/11 * 2/11
    train = [(0, [7, 7]), (1, [8])]
    assert B.naive_bayes(train, [(0, [7, 8])], 10, 2) == 1.0


def test_baselines_are_deterministic():
    train, test = _planted_sentiment(60, 3, signal=False), _planted_sentiment(300, 4)
    assert B.logistic(train, test, 50, 2) == B.logistic(train, test, 50, 2)


class _Scripted(pl.LightningModule):
    """One weight; each validation logs the next accuracy of a script, whatever the weight."""

    def __init__(self, script):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.script, self.at = list(script), 0

    def training_step(self, batch, batch_idx):
        return (self.w - 1.0).pow(2).sum()  # moves w every update, so each step's weights differ

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log("val/accuracy", float(self.script[min(self.at, len(self.script) - 1)]))
        self.at += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_scripted(script, patience, updates=20, mode="max", **kw):
    model = _Scripted(script)
    keep = KeepBestOnValidation("val/accuracy", mode, patience=patience, **kw)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(100, 1)), batch_size=1)
    seen = {}

    class Record(pl.Callback):  # the weight at each validation, to compare with what was kept
        def on_validation_end(self, trainer, pl_module):
            seen[trainer.global_step] = pl_module.w.item()

    with _quiet_lightning():  # Lightning's own known warnings, as every run in the package
        trainer = T._trainer(updates, False, Path("."), val_every=2, callbacks=[keep, Record()])
        trainer.fit(model, train_dataloaders=data, val_dataloaders=data)
    return model, keep, trainer, seen


def test_early_stopping_keeps_the_best_validation_weights_and_stops_after_patience():
    # validations at updates 2, 4, 6, ...: the best (0.8) is the second; patience 2 stops at the fourth (update 8)
    model, keep, trainer, seen = _fit_scripted([0.5, 0.8, 0.7, 0.6, 0.9, 0.95], patience=2)
    assert keep.best == pytest.approx(0.8) and keep.best_step == 4 and keep.checks == 4
    assert trainer.global_step == 8
    assert model.w.item() == pytest.approx(seen[4]) and model.w.item() != pytest.approx(seen[8])


def test_early_stopping_runs_to_the_cap_while_validation_improves():
    model, keep, trainer, seen = _fit_scripted([0.1 * k for k in range(1, 20)], patience=2, updates=10)
    assert trainer.global_step == 10 and keep.best_step == 10
    assert model.w.item() == pytest.approx(seen[10])


def test_early_stopping_never_stops_for_patience_before_min_steps():
    # the same script as above: patience 2 would stop at update 8, but layers unfreeze until update 12
    model, keep, trainer, seen = _fit_scripted([0.5, 0.8, 0.7, 0.6, 0.55, 0.5, 0.5, 0.5], patience=2, min_steps=12)
    assert trainer.global_step == 12 and keep.best_step == 4
    assert model.w.item() == pytest.approx(seen[4])


@pytest.mark.parametrize("mode, script, target, stop, best", [
    ("min", [6.0, 5.0, 4.5, 3.9, 3.5, 3.0], 4.0, 8, 8),  # the NLL is at most 4.0 at the fourth check: stop there
    ("max", [0.5, 0.6, 0.71, 0.9], 0.7, 6, 6),
])
def test_training_stops_when_the_target_is_reached(mode, script, target, stop, best):
    model, keep, trainer, seen = _fit_scripted(script, patience=None, mode=mode, target=target)
    assert trainer.global_step == stop and keep.reached == stop and keep.best_step == best


def test_an_unreached_target_runs_to_the_cap():
    model, keep, trainer, seen = _fit_scripted([6.0, 5.5, 5.6, 5.7, 5.8], patience=None, updates=10, mode="min",
                                               target=4.0)
    assert trainer.global_step == 10 and keep.reached is None
    assert keep.best == pytest.approx(5.5) and model.w.item() == pytest.approx(seen[4])  # the best, not the last


def test_preregistration_names_settings_sesoi_and_gates():
    pre = TS.preregistration("lecture")
    assert pre["sesoi"] == TS.SESOI and pre["settings"] == TS.lecture().to_dict()
    assert set(pre["gates"]["baselines"]) == {"naive_bayes", "logistic"}
    assert pre["pilot"]["lrs"] == TS.lecture().pilot["lrs"] and "validation accuracy" in pre["pilot"]["rule"]
    chosen = TS.preregistration("lecture", {"lstm": {"pretrained": 1e-3, "adapt_only": 3e-3, "scratch": 3e-4}})
    assert chosen["lr_choices"]["lstm"]["scratch"] == 3e-4 and "lr_choices" not in pre
    json.dumps(pre)
    with pytest.raises(ConfigError, match="transfer preset 'nope'"):
        TS.preregistration("nope")


def test_real_corpora_prepare_without_writing_there(shared_data, tmp_path):
    before = sorted((p.relative_to(shared_data), p.stat().st_mtime) for p in shared_data.rglob("*"))
    settings = TS.smoke()
    path = TD.prepare_data(settings, tmp_path / "out", echo=lambda m: None)
    data = TD.load_prepared(path)
    mr = data["mr"]
    # MR's 10,662 sentences split 70 / 10 / 20 by class; the smoke preset keeps a balanced slice of train and test
    assert len(mr["val"]) == 1066
    assert len(mr["train"]) == 200 and sum(label for label, _ in mr["train"]) == 100
    assert len(mr["test"]) == 100 and sum(label for label, _ in mr["test"]) == 50
    assert len(data["general"]) == 350 and len(data["general_val"]) == 50
    assert sorted((p.relative_to(shared_data), p.stat().st_mtime) for p in shared_data.rglob("*")) == before


def test_the_lectures_preregistration_holds_c4s_pilot_and_its_choices(tmp_path):
    from experiments import lecture
    from experiments.c4_transfer.transfer import write_choices

    settings = lecture.PRESETS["lecture-smoke"]()
    before = lecture.preregistration(settings, tmp_path)
    assert before["settings"]["c4"]["pilot"]["lrs"] == TS.smoke().pilot["lrs"]
    assert "lr_choices" not in before["settings"]["c4"]  # no pilot has run in this folder yet
    (tmp_path / "c4").mkdir()
    picked = {"lr": {b: {a: 1e-3 for a in TS.ARMS} for b in TS.BODIES}, "val_accuracy": None}
    write_choices(TS.smoke(), tmp_path / "c4", picked)
    after = lecture.preregistration(settings, tmp_path)
    assert after["settings"]["c4"]["lr_choices"] == picked["lr"] and after["hash"] != before["hash"]
    other = {"lr": {b: {a: 3e-3 for a in TS.ARMS} for b in TS.BODIES}, "val_accuracy": None}
    with pytest.raises(ConfigError, match="pre-registered with"):  # a folder's verdict rows ran at its first choice
        write_choices(TS.smoke(), tmp_path / "c4", other)
