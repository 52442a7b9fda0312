"""The bad-input matrix: data files, YAML configs, CLI arguments and checkpoints each fail with a specific message
and a non-zero exit, in process (no subprocess start-up per case)."""

import gzip

import pytest
import pytorch_lightning as pl
import torch

from experiments.gvt import main
from modules.data import OracleDataModule
from modules.models import TransformerSeq2Seq

SMALL = "configs/experiment/transformer_oracle_small.yaml"
COCO = "configs/experiment/transformer_coco.yaml"
MULTI30K = "configs/experiment/transformer_multi30k.yaml"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_text("")
    (d / "blank.txt").write_text("\n  \n\t\n")
    (d / "latin1.txt").write_bytes("a good line\nun caf\xe9 cr\xe8me\n".encode("latin-1"))
    (d / "three.en").write_text("a\nb\nc\n")
    (d / "captions.txt").write_text("a man rides a horse\ntwo dogs play in the snow\n" * 20)  # a corpus of our own
    (d / "two.de").write_text("x\ny\n")
    (d / "bad.yaml").write_text("model:\n  class_path: [unclosed\n")
    with gzip.open(d / "fake.gz", "wb") as f:
        f.write(b"one line\n")
    (d / "notgz.gz").write_text("plain text\n")
    pl.seed_everything(0)
    dm = OracleDataModule(preset="small", batch_size=32)
    model = TransformerSeq2Seq(vocab_size=dm.vocab_size, d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1,
                               n_decoder_layers=1, evaluation=dict(num_eval_samples=0))
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, dm)
    trainer.save_checkpoint(d / "model.ckpt")
    (d / "truncated.ckpt").write_bytes((d / "model.ckpt").read_bytes()[:2000])
    torch.save({"state_dict": {}}, d / "foreign.ckpt")
    return d


def run(args, capsys):
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    return code, err


FIT = ["fit", "--trainer.max_epochs", "1", "--tracking.wandb_mode", "disabled"]

CASES = [
    # data files
    ("missing file", FIT + ["--config", COCO, "--data.init_args.train", "{d}/nope.txt"], "nope.txt: no such file"),
    ("empty file", FIT + ["--config", COCO, "--data.init_args.train", "{d}/empty.txt"], "empty.txt: the file is empty"),
    ("only blank lines", FIT + ["--config", COCO, "--data.init_args.train", "{d}/blank.txt"], "blank"),
    ("undecodable bytes", FIT + ["--config", COCO, "--data.init_args.train", "{d}/latin1.txt"], "line 2"),
    ("directory as file", FIT + ["--config", COCO, "--data.init_args.train", "{d}"], "directory"),
    ("gz that is not gzip", FIT + ["--config", COCO, "--data.init_args.train", "{d}/notgz.gz"], "gzip"),
    ("parallel length mismatch", FIT + ["--config", MULTI30K, "--data.init_args.train",
                                        "{{src: {d}/two.de, tgt: {d}/three.en}}", "--data.init_args.tokenizer", "word"],
     "2"),
    # settings
    ("batch size 0", FIT + ["--config", SMALL, "--data.init_args.batch_size", "0"], "batch_size must be an integer >= 1"),
    ("batch larger than data with drop_last", FIT + ["--config", SMALL, "--data.init_args.num_train", "10",
                                                     "--data.init_args.drop_last", "true"],
     "larger than the training split"),
    ("vocabulary smaller than specials", FIT + ["--config", COCO, "--data.init_args.train", "{d}/captions.txt",
                                                "--data.init_args.test", "{d}/captions.txt",
                                                "--data.init_args.max_vocab_size", "3"],
     "max_vocab_size"),
    ("unknown data preset", FIT + ["--config", SMALL, "--data.init_args.preset", "huge"], "preset"),
    ("label condition with one class", FIT + ["--config", SMALL, "--data.init_args.condition", "label",
                                              "--data.init_args.num_classes", "1"], "num_classes"),
    ("learning rate 0", FIT + ["--config", SMALL, "--model.init_args.lr", "0"], "lr must be > 0"),
    ("eval temperature 0", FIT + ["--config", SMALL, "--model.init_args.evaluation.eval_temperature", "0"], "eval_temperature"),
    # YAML configs
    ("YAML syntax error", FIT + ["--config", "{d}/bad.yaml"], "bad.yaml"),
    ("missing config file", FIT + ["--config", "{d}/none.yaml"], "none.yaml"),
    ("misspelled setting", FIT + ["--config", SMALL, "--model.init_args.d_modle", "3"], "d_modle"),
    ("unknown model class", FIT + ["--config", SMALL, "--model", "modules.models.Nope"], "Nope"),
    ("value outside a choice", FIT + ["--config", SMALL, "--model.init_args.positional", "rotary"], "rotary"),
    ("unknown W&B mode", FIT + ["--config", SMALL, "--tracking.wandb_mode", "sometimes"], "sometimes"),
    # CLI arguments
    ("unknown command", ["train"], "unknown command 'train'"),
    ("sample: temperature 0", ["sample", "--checkpoint", "{d}/model.ckpt", "--temperature", "0"], "temperature must be > 0"),
    ("sample: negative temperature", ["sample", "--checkpoint", "{d}/model.ckpt", "--temperature", "-1"], "temperature"),
    ("sample: top-p above 1", ["sample", "--checkpoint", "{d}/model.ckpt", "--top-p", "1.5"], "top_p must lie in (0, 1]"),
    ("sample: top-p 0", ["sample", "--checkpoint", "{d}/model.ckpt", "--top-p", "0"], "top_p must lie in (0, 1]"),
    ("sample: top-k 0", ["sample", "--checkpoint", "{d}/model.ckpt", "--top-k", "0"], "top_k must be >= 1"),
    ("sample: zero samples", ["sample", "--checkpoint", "{d}/model.ckpt", "--num-samples", "0"], "num-samples"),
    ("sample: condition to unconditional model", ["sample", "--checkpoint", "{d}/model.ckpt", "--condition", "pos"],
     "unconditional"),
    # checkpoints
    ("truncated checkpoint (sample)", ["sample", "--checkpoint", "{d}/truncated.ckpt"], "unreadable"),
    ("missing checkpoint (sample)", ["sample", "--checkpoint", "{d}/nope.ckpt"], "does not exist"),
    ("checkpoint not written by this package", ["sample", "--checkpoint", "{d}/foreign.ckpt"], "not written by"),
    ("truncated checkpoint (validate)", ["validate", "--config", SMALL, "--ckpt_path", "{d}/truncated.ckpt"], "unreadable"),
    ("unknown GAN loss name", FIT + ["--config", "configs/experiment/gan_gumbel_oracle_small.yaml",
                                     "--model.init_args.game.loss", "wasserstein"], "wasserstein"),
    ("unknown GAN estimator", FIT + ["--config", "configs/experiment/gan_gumbel_oracle_small.yaml",
                                     "--model.init_args.game.estimator", "straight"], "straight"),
    # experiment commands
    ("sweep: unknown family", ["sweep", "batch-size", "--preset", "smoke", "--families", "nope", "--out", "{d}/sw"],
     "unknown family 'nope'"),
    ("sweep: zero budget", ["sweep", "batch-size", "--preset", "smoke", "--budget-value", "0", "--out", "{d}/sw"],
     "budget must be >= 1"),
    ("sweep: negative budget", ["sweep", "batch-size", "--preset", "smoke", "--budget-value", "-5", "--out", "{d}/sw"],
     "budget must be >= 1"),
    ("temperature <= 0", ["temperature", "--checkpoint", "{d}/model.ckpt", "--data-config", SMALL,
                          "--temperatures", "0", "1"],
     "temperatures must be > 0"),
    ("checkpoint with another vocabulary", ["validate", "--config", SMALL, "--ckpt_path", "{d}/model.ckpt",
                                            "--data.init_args.vocab_size", "150", "--tracking.wandb_mode", "disabled",
                                            "--trainer.default_root_dir", "{d}/runs"],
     "vocabulary in the checkpoint differs"),
]


@pytest.mark.parametrize("name, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly(name, args, message, files, capsys):
    args = [a.format(d=files) for a in args]
    code, err = run(args, capsys)
    assert code not in (0, None), f"{name}: exit code {code}"
    assert message in err, f"{name}: {err[-1500:]}"
    assert "Traceback" not in err


def test_the_matrix_has_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_failed_runs_leave_no_checkpoint_behind(files, capsys):
    root = files / "failed-run"
    run(FIT + ["--config", SMALL, "--data.init_args.num_train", "10", "--data.init_args.drop_last", "true",
               "--trainer.default_root_dir", str(root)], capsys)
    assert not list(root.rglob("*.ckpt"))


def test_checkpoint_of_the_other_family_is_refused(files):
    from modules.models import TextGAN

    with pytest.raises(ValueError, match="of the 'transformer' family, not 'gan'"):
        TextGAN.load_from_checkpoint(files / "model.ckpt", weights_only=True)


def test_refused_sweeps_write_nothing(files, capsys):
    run(["sweep", "batch-size", "--preset", "smoke", "--budget-value", "0", "--out", str(files / "sw0")], capsys)
    assert not (files / "sw0").exists()
