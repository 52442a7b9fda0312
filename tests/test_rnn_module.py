"""The RNN family as a LightningModule: `gvt fit` and `gvt sample` with attention on and off, the shared loss and
evaluation, checkpoints, the experiment families."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from modules.data import TaskDataModule
from modules.models import RNNSeq2Seq, TransformerSeq2Seq
from modules.models.base import CHECKPOINT_KEY

ROOT = Path(__file__).resolve().parents[1]


def tiny_dm(task="reverse", **kwargs) -> TaskDataModule:
    args = dict(num_words=10, min_len=3, max_len=6, num_train=640, num_val=32, num_test=64, batch_size=32)
    return TaskDataModule(task, **{**args, **kwargs})


def tiny_model(dm, **kwargs) -> RNNSeq2Seq:
    args = dict(emb_dim=32, hidden_dim=32, dropout=0.0, lr=1e-2, evaluation=dict(num_eval_samples=16))
    return RNNSeq2Seq(dm.vocab_size, **{**args, **kwargs})


def trainer(tmp_path, **kwargs) -> pl.Trainer:
    args = dict(max_epochs=1, logger=pl.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1)
    return pl.Trainer(**{**args, **kwargs})


@pytest.fixture(scope="module", params=["none", "additive"])
def fitted(request, tmp_path_factory):
    """`gvt fit` of the shipped reverse config, tiny budget, attention off and on."""
    from modules.cli import main

    attention = request.param
    root = tmp_path_factory.mktemp(f"fit-{attention}")
    config = "rnn_reverse.yaml" if attention == "none" else "rnn_attention_reverse.yaml"
    code = main([
        "fit", "--config", str(ROOT / "configs" / "experiment" / config),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "1",
        "--trainer.log_every_n_steps", "1",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--model.init_args.evaluation.num_eval_samples", "8",
        "--model.init_args.hidden_dim", "16", "--model.init_args.emb_dim", "16",
        "--data.init_args.num_train", "256", "--data.init_args.num_val", "16", "--data.init_args.num_test", "16",
        "--tracking.wandb_mode", "disabled",
    ])
    assert code == 0
    run = next(root.glob("*/version_0"))
    return attention, run


def test_gvt_fit_runs_end_to_end(fitted):
    attention, run = fitted
    metrics = (run / "metrics.csv").read_text()
    for name in ("train/loss", "val/nll_test_per_token", "val/bleu2", "val/distinct1"):
        assert name in metrics
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt[CHECKPOINT_KEY]["family"] == "rnn"
    assert ckpt["hyper_parameters"]["attention"] == attention
    assert (any("attn" in k for k in ckpt["state_dict"])) == (attention != "none")


def test_gvt_sample_reads_the_checkpoint(fitted, tmp_path):
    from modules.sample_cli import main

    _, run = fitted
    out = tmp_path / "samples.txt"
    code = main(["--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--num-samples", "3", "--greedy",
                 "--condition", "t1 t2 t3", "--out", str(out)])
    assert code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(w.startswith("t") for line in lines for w in line.split())


def test_one_loss_learns_the_reverse_task(tmp_path):
    pl.seed_everything(0)
    dm = tiny_dm()
    model = tiny_model(dm, attention="additive")
    tr = trainer(tmp_path, max_epochs=3, limit_val_batches=1)  # 60 steps
    tr.fit(model, dm)
    uniform = torch.log(torch.tensor(float(dm.vocab.num_words + 1))).item()  # the words and the end token
    assert tr.callback_metrics["val/nll_test_per_token"] < uniform - 1.0


def test_training_is_the_transformer_family_s_own():
    """One loss, one optimiser rule: the MLE training methods are shared, not copied."""
    for name in ("training_step", "on_before_optimizer_step", "configure_optimizers",
                 "generator_optimizer_settings"):
        assert getattr(RNNSeq2Seq, name) is getattr(TransformerSeq2Seq, name)


def test_same_seed_gives_the_same_numbers(tmp_path):
    def run():
        pl.seed_everything(3, workers=True)
        dm = tiny_dm(seed=3)
        tr = trainer(tmp_path, limit_train_batches=4, limit_val_batches=1)
        tr.fit(tiny_model(dm, dropout=0.1, num_layers=2), dm)
        return {k: v.item() for k, v in tr.callback_metrics.items()}

    assert run() == run()


@pytest.mark.parametrize("kwargs,match", [
    ({"attention": "luong"}, "model.attention"),
    ({"hidden_dim": 0}, "model.hidden_dim"),
    ({"dropout": -0.1}, "model.dropout"),
    ({"lr": 0.0}, "model.lr"),
    ({"optimizer": "sgd"}, "model.optimizer"),
])
def test_bad_settings_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RNNSeq2Seq(vocab_size=20, **kwargs)


def test_families_rnn_and_rnn_attention():
    from experiments.core.families import get_family

    for name, attention in (("rnn", "none"), ("rnn-attention", "additive")):
        family = get_family(name)
        assert family.load_class() is RNNSeq2Seq and not family.adversarial
        model = family.load_class()(vocab_size=20, **family.init_kwargs({}))
        assert model.generator.config.attention == attention
