"""The MLE family as a LightningModule: one loss, overfitting, metrics logged side by side, checkpoints."""

import pytest
import pytorch_lightning as pl
import torch

from modules.data import OracleDataModule
from modules.data.errors import VocabularyMismatchError
from modules.models import TransformerSeq2Seq
from modules.models.base import CHECKPOINT_KEY


def tiny_model(dm, **kwargs) -> TransformerSeq2Seq:
    args = dict(d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0,
                evaluation=dict(num_eval_samples=32), warmup_steps=0, schedule="constant")
    return TransformerSeq2Seq(vocab_size=dm.vocab_size, **{**args, **kwargs})


def trainer(tmp_path, **kwargs) -> pl.Trainer:
    args = dict(max_epochs=1, logger=pl.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1)
    return pl.Trainer(**{**args, **kwargs})


def test_overfits_a_tiny_batch(tmp_path):
    pl.seed_everything(0)
    dm = OracleDataModule(preset="small", num_train=8, batch_size=8)
    model = tiny_model(dm, lr=1e-2, weight_decay=0.0)
    tr = trainer(tmp_path, max_epochs=150, limit_val_batches=0, log_every_n_steps=1)
    tr.fit(model, dm)
    # 8 sequences of 12 words from a 200-word oracle: memorised means far below the oracle's own ~3.3 nats
    assert tr.callback_metrics["train/loss"] < 0.3


def test_validation_logs_every_shared_metric(tmp_path):
    pl.seed_everything(0)
    dm = OracleDataModule(preset="small", batch_size=32)
    tr = trainer(tmp_path, limit_train_batches=3, limit_val_batches=2)
    tr.fit(tiny_model(dm), dm)
    m = tr.callback_metrics
    for key in ("train/loss", "val/nll_test_per_token", "val/nll_test_per_sentence", "val/nll_oracle_per_token",
                "val/nll_oracle_per_sentence", "val/bleu2", "val/bleu5", "val/self_bleu2", "val/distinct1"):
        assert key in m, key
        assert torch.isfinite(m[key])
    # per-sentence NLL sums the 12 words of an oracle sentence: exactly 12x the per-token value
    assert m["val/nll_oracle_per_sentence"].item() == pytest.approx(12 * m["val/nll_oracle_per_token"].item(), rel=1e-5)
    assert m["val/nll_test_per_sentence"].item() == pytest.approx(12 * m["val/nll_test_per_token"].item(), rel=1e-5)
    assert list((tmp_path / "lightning_logs").glob("version_*/samples/val_step*.csv"))


def test_training_lowers_the_test_nll_below_uniform(tmp_path):
    pl.seed_everything(0)
    dm = OracleDataModule(preset="small", batch_size=64)
    model = tiny_model(dm, lr=3e-3)
    tr = trainer(tmp_path, max_epochs=2, limit_val_batches=2)
    tr.fit(model, dm)
    uniform = torch.log(torch.tensor(200.0)).item()
    assert tr.callback_metrics["val/nll_test_per_token"] < uniform - 0.3


def test_same_seed_gives_the_same_numbers(tmp_path):
    def run():
        pl.seed_everything(3, workers=True)
        dm = OracleDataModule(preset="small", batch_size=32, seed=3)
        tr = trainer(tmp_path, limit_train_batches=4, limit_val_batches=1)
        tr.fit(tiny_model(dm, dropout=0.1), dm)
        return {k: v.item() for k, v in tr.callback_metrics.items()}

    assert run() == run()


def test_checkpoint_holds_the_vocabulary_and_restores_it(tmp_path):
    pl.seed_everything(0)
    dm = OracleDataModule(preset="small", batch_size=32)
    tr = trainer(tmp_path, limit_train_batches=2, limit_val_batches=0)
    model = tiny_model(dm)
    tr.fit(model, dm)
    path = tmp_path / "m.ckpt"
    tr.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt[CHECKPOINT_KEY]["family"] == "transformer"
    restored = TransformerSeq2Seq.load_from_checkpoint(path, weights_only=True)
    assert restored.vocab == dm.vocab
    src = torch.full((2, 1), 4)
    out = restored.sample(src, src.eq(0), greedy=True)
    assert out.tokens.shape == (2, 12)


def test_checkpoint_with_another_vocabulary_is_refused(tmp_path):
    pl.seed_everything(0)
    dm = OracleDataModule(preset="small", batch_size=32)
    tr = trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    tr.fit(tiny_model(dm), dm)
    path = tmp_path / "m.ckpt"
    tr.save_checkpoint(path)
    other = OracleDataModule(preset="small", vocab_size=150, batch_size=32)
    restored = TransformerSeq2Seq.load_from_checkpoint(path, weights_only=True)
    with pytest.raises((VocabularyMismatchError, ValueError), match="vocab"):
        trainer(tmp_path).validate(restored, other)


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=0.0), "lr"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(evaluation=dict(eval_temperature=0.0)), "evaluation.eval_temperature"),
    (dict(warmup_steps=-1), "warmup_steps"),
])
def test_bad_hyperparameters_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerSeq2Seq(vocab_size=50, **kwargs)
