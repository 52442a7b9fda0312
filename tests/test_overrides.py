"""Settings at an old or wrong path get one line naming the setting and where it is (modules/overrides.py)."""

from pathlib import Path

import pytest

from modules.cli import main

ROOT = Path(__file__).resolve().parents[1]
GAN = "configs/experiment/gan_gumbel_oracle_small.yaml"
TRANSFORMER = "configs/experiment/transformer_oracle_small.yaml"


def fit(args, capsys, monkeypatch):
    """`gvt fit --config ... ARGS --print_config`: nothing trains; the exit status and stderr."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    try:
        status = main(["fit", *args, "--print_config"])
    except SystemExit as exc:  # LightningCLI exits after printing the config, jsonargparse after its own error
        status = exc.code or 0
    return status, capsys.readouterr().err


# (arguments, the setting named, where the message says it is)
MOVED = [
    ([GAN, "--model.init_args.pretrain_epochs", "1"], "--model.init_args.pretrain_epochs",
     "it moved to --model.init_args.game.pretrain_epochs"),
    ([GAN, "--model.init_args.g_lr", "0.1"], "--model.init_args.g_lr", "it moved to --model.init_args.generator.lr"),
    ([GAN, "--model.init_args.batch_size", "8"], "--model.init_args.batch_size",
     "did you mean --data.init_args.batch_size?"),
]
MISSPELLED = [
    ([GAN, "--model.init_args.game.pretrain_epoch", "1"], "--model.init_args.game.pretrain_epoch",
     "did you mean --model.init_args.game.pretrain_epochs?"),
    ([TRANSFORMER, "--trainer.max_step", "3"], "--trainer.max_step", "did you mean --trainer.max_steps?"),
    # argparse would take this prefix of --model.init_args.game.lr_schedule and silently set that instead
    ([GAN, "--model.init_args.game.lr", "0.1"], "--model.init_args.game.lr",
     "did you mean --model.init_args.discriminator.lr or --model.init_args.generator.lr?"),
]
VALID = [
    [GAN, "--model.init_args.game.pretrain_epochs", "1"],
    [GAN, "--model.init_args.generator.lr", "0.001", "--trainer.max_steps", "3"],
    [TRANSFORMER, "--trainer.max_epochs", "3", "--data.init_args.batch_size", "8"],
    [TRANSFORMER, "--model.class_path", "modules.models.TransformerSeq2Seq"],
]


@pytest.mark.parametrize("args,setting,where", MOVED + MISSPELLED, ids=lambda v: v[1] if isinstance(v, list) else "")
def test_a_setting_at_a_wrong_path_is_named_with_its_path(args, setting, where, capsys, monkeypatch):
    status, err = fit(["--config", *args], capsys, monkeypatch)
    assert status == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"gvt fit: error: {setting}: ") and line.endswith(where), err
    assert "NestedArg" not in err


@pytest.mark.parametrize("args", VALID, ids=lambda a: " ".join(a[1:]))
def test_valid_settings_pass(args, capsys, monkeypatch):
    status, err = fit(["--config", *args], capsys, monkeypatch)
    assert status == 0, err


def test_a_wrong_key_in_a_yaml_file_names_the_file_and_the_key(tmp_path, capsys, monkeypatch):
    config = tmp_path / "bad.yaml"
    config.write_text("trainer:\n  max_step: 3\n")
    status, err = fit(["--config", GAN, "--config", str(config)], capsys, monkeypatch)
    assert status == 2
    assert f"{config}: trainer.max_step: no such setting; did you mean trainer.max_steps?" in err
