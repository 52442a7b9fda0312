"""Prediction (`Trainer.predict`, `gvt predict`): samples for each condition of the predict split, as CSV.

In process, for both families; the `gvt predict` command end to end is in test_cli.py."""

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from experiments.core.families import merge_args
from modules.data import OracleDataModule
from modules.models import TextGAN, TransformerSeq2Seq
from modules.models.base import PredictionSettings
from modules.models.configs import nest_flat_args
from modules.sample_cli import CheckpointError, load_weights

COLUMNS = ["condition_index", "condition", "sample_index", "sample"]


def tiny_data(**kw):
    args = dict(preset="small", vocab_size=25, seq_len=6, num_train=64, num_val=16, num_test=20, batch_size=16,
                eval_batch_size=8)
    args.update(kw)
    return OracleDataModule(**args)


def tiny_gan(dm, **kw):
    args = dict(generator=dict(emb_dim=16, hidden_dim=16, lr=1e-2),
                discriminator=dict(emb_dim=16, hidden_dim=16, filter_sizes=(2, 3), num_filters=8, dropout=0.0,
                                   lr=1e-2),
                game=dict(anneal_steps=10), evaluation=dict(num_eval_samples=0))
    # overrides by their former flat names (modules.models.configs.FLAT_TO_NESTED)
    return TextGAN(dm.vocab_size, **merge_args(args, nest_flat_args(kw)))


def tiny_transformer(dm):
    return TransformerSeq2Seq(dm.vocab_size, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32,
                              dropout=0.0, evaluation=dict(num_eval_samples=0))


def make_trainer(root: Path, **kw) -> pl.Trainer:
    args = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, default_root_dir=root)
    args.update(kw)
    return pl.Trainer(**args)


def predict(model, dm, root: Path, **settings) -> list[dict]:
    model.prediction = PredictionSettings(**settings)
    make_trainer(root).predict(model, datamodule=dm)
    with (root / "predictions" / model.prediction.file).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


@pytest.fixture
def gan_checkpoint(tmp_path) -> Path:
    """A GAN with a latent z after two adversarial steps, saved as a checkpoint."""
    dm = tiny_data()
    model = tiny_gan(dm, z_dim=4)
    pl.seed_everything(0, verbose=False)
    trainer = make_trainer(tmp_path / "fit", limit_train_batches=2)
    trainer.fit(model, dm)
    path = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_a_gan_checkpoint_predicts_samples_for_every_condition(gan_checkpoint, tmp_path):
    dm = tiny_data()
    model = tiny_gan(dm, z_dim=4)
    load_weights(model, str(gan_checkpoint))
    rows = predict(model, dm, tmp_path, samples_per_condition=3)
    assert len(rows) == 20 * 3  # every test condition, three samples each
    assert [(int(r["condition_index"]), int(r["sample_index"])) for r in rows] == \
        [(i, j) for i in range(20) for j in range(3)]
    assert all(r["condition"] == "" for r in rows)  # unconditional data
    for r in rows:
        words = r["sample"].split()
        assert len(words) == 6 and all(w.startswith("w") for w in words)
    assert len({r["sample"] for r in rows}) > 1  # z and the noise differ from sample to sample


def test_predictions_are_repeatable_and_follow_the_seed(gan_checkpoint, tmp_path):
    def run(folder, seed):
        dm = tiny_data()
        model = tiny_gan(dm, z_dim=4)
        load_weights(model, str(gan_checkpoint))
        return predict(model, dm, tmp_path / folder, samples_per_condition=2, seed=seed)

    assert run("a", seed=5) == run("b", seed=5)
    assert run("a", seed=5) != run("c", seed=6)


def test_the_gan_weights_come_from_the_checkpoint(gan_checkpoint, tmp_path):
    dm = tiny_data()
    untrained = predict(tiny_gan(dm, z_dim=4), dm, tmp_path / "untrained")
    model = tiny_gan(dm, z_dim=4)
    load_weights(model, str(gan_checkpoint))
    assert predict(model, dm, tmp_path / "trained") != untrained


def test_label_conditions_are_written_by_name(tmp_path):
    dm = tiny_data(condition="label", num_classes=3)
    dm.prepare()
    rows = predict(tiny_transformer(dm), dm, tmp_path, samples_per_condition=2)
    expected = [dm.vocab.labels[ex.label] for ex in dm.examples("test")]
    assert [r["condition"] for r in rows[::2]] == expected
    assert set(expected) <= {"c0", "c1", "c2"} and len(set(expected)) > 1


def test_source_conditions_are_written_as_text(tmp_path):
    dm = tiny_data(condition="source")
    dm.prepare()
    rows = predict(tiny_transformer(dm), dm, tmp_path)
    assert [r["condition"] for r in rows] == [dm.decode(ex.src) for ex in dm.examples("test")]


def test_top_k_1_and_a_tiny_temperature_both_give_the_most_likely_sample(tmp_path):
    dm = tiny_data()
    model = tiny_transformer(dm)
    greedy = predict(model, dm, tmp_path / "k1", samples_per_condition=2, top_k=1)
    assert all(a["sample"] == b["sample"] for a, b in zip(greedy[::2], greedy[1::2]))  # no randomness left
    cold = predict(model, dm, tmp_path / "cold", samples_per_condition=2, temperature=1e-4)
    assert [r["sample"] for r in cold] == [r["sample"] for r in greedy]
    warm = predict(model, dm, tmp_path / "warm", samples_per_condition=2)
    assert [r["sample"] for r in warm] != [r["sample"] for r in greedy]


def test_the_predictions_go_to_the_loggers_run_folder(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    dm = tiny_data()
    model = tiny_transformer(dm)
    model.prediction = PredictionSettings(file="mine.csv")
    make_trainer(tmp_path, logger=CSVLogger(tmp_path, name="run", version="v")).predict(model, datamodule=dm)
    assert (tmp_path / "run" / "v" / "predictions" / "mine.csv").is_file()


@pytest.mark.parametrize("kwargs, match", [
    (dict(samples_per_condition=0), "prediction.samples_per_condition must be >= 1"),
    (dict(temperature=0.0), "prediction.temperature must be > 0"),
    (dict(top_k=0), "prediction.top_k must be >= 1"),
    (dict(top_p=1.5), r"prediction.top_p must lie in \(0, 1\]"),
    (dict(file="../x.csv"), "prediction.file must be a plain file name"),
])
def test_bad_prediction_settings_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PredictionSettings(**kwargs)


def test_load_weights_refuses_a_checkpoint_of_the_other_family(gan_checkpoint):
    dm = tiny_data()
    with pytest.raises(ValueError, match="'gan' family, not 'transformer'"):
        load_weights(tiny_transformer(dm), str(gan_checkpoint))


def test_load_weights_refuses_a_checkpoint_of_another_shape(gan_checkpoint):
    dm = tiny_data()
    with pytest.raises(CheckpointError, match="does not fit this model's settings"):
        load_weights(tiny_gan(dm, z_dim=4, g_hidden_dim=24), str(gan_checkpoint))
