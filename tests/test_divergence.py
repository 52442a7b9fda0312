"""A NaN loss stops the run cleanly and is recorded; it does not crash."""

import json

import pytorch_lightning as pl
import torch

from modules.callbacks import DivergenceMonitor
from modules.data import OracleDataModule
from modules.models import TransformerSeq2Seq


class ExplodesAtStep3(TransformerSeq2Seq):
    def training_step(self, batch, batch_idx):
        if self.global_step == 3:  # as an exploding update would leave it
            with torch.no_grad():
                next(self.generator.parameters()).fill_(float("nan"))
        return super().training_step(batch, batch_idx)


def test_nan_loss_stops_the_run_and_records_it(tmp_path):
    pl.seed_everything(0)
    dm = OracleDataModule(preset="small", batch_size=32)
    model = ExplodesAtStep3(vocab_size=dm.vocab_size, d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1,
                            n_decoder_layers=1, evaluation=dict(num_eval_samples=8))
    monitor = DivergenceMonitor()
    trainer = pl.Trainer(max_epochs=3, logger=pl.loggers.CSVLogger(tmp_path), callbacks=[monitor],
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                         accelerator="cpu", gradient_clip_val=None)
    trainer.fit(model, dm)  # no exception
    assert monitor.diverged
    assert trainer.global_step == 4  # the step that produced NaN ran, nothing after it
    record = json.loads(next(tmp_path.glob("lightning_logs/version_0/divergence.json")).read_text())
    assert record["global_step"] == 4 and "train/loss" in record["non_finite"]
    assert record["last_finite_metrics"]["train/loss"] > 0
    assert torch.load(record["checkpoint"], weights_only=True)["global_step"] == 4
