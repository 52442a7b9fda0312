"""The ``gvt`` command.

``gvt fit|validate|test|predict`` are LightningCLI subcommands (YAML configs in configs/, ``--print_config``);
``gvt sample`` writes text from a checkpoint of either family. The ``gvt`` command itself is experiments/gvt.py,
which adds the experiment commands; ``python -m modules.cli`` runs the library's commands alone.

Lightning and the model code are imported inside the functions that run a command, so that ``gvt --help`` and the
experiment commands (which import this module) do not pay for them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

import yaml

from modules.errors import ConfigFileError, GvtError, MissingInputError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
LIBRARY_COMMANDS = (*LIGHTNING_COMMANDS, "sample")

HELP_HEAD = """usage: gvt COMMAND [options]

Train and compare a text GAN (two losses) and a Transformer encoder-decoder (one loss) on the same data.

Lightning runs (LightningCLI; `gvt fit --help`, `--config FILE`, `--print_config`):
  fit          train a model:        gvt fit --config configs/experiment/transformer_oracle_small.yaml
  validate     evaluate on the validation split
  test         evaluate on the test split
  predict      samples for each condition of the test split, as CSV in the run folder (predictions/):
               gvt predict --config FILE --ckpt_path CKPT [--prediction.samples_per_condition N]
               [--prediction.temperature T] [--prediction.top_k K] [--prediction.top_p P] [--prediction.seed S]

Checkpoints:
  sample       text from a checkpoint: gvt sample --checkpoint PATH --num-samples N [--temperature T]
               [--top-k K] [--top-p P] [--condition TEXT|LABEL] [--out FILE]
"""
HELP_TAIL = """
Run `gvt COMMAND --help` for the options of a command.
"""
HELP = HELP_HEAD + HELP_TAIL



def _lightning_cli(args: list[str]) -> None:
    # pytorch_lightning and the model code load here, not at the top: `gvt --help` and `gvt sweep` stay light.
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI

    from modules.callbacks import DivergenceMonitor, FlushLogsOnCheckpoint
    from modules.data.base import SequenceDataModule
    from modules.known_warnings import known_warnings_filtered, lightning_banner_dropped
    from modules.models.base import GeneratorModule, PredictionSettings
    from modules.overrides import check_command_settings
    from modules.checkpoints import load_weights, read_checkpoint
    from modules.tracking import Tracking

    class GVTCLI(LightningCLI):
        def parse_arguments(self, parser, args) -> None:
            # `gvt` always hands over its argv explicitly (also when called from Python); LightningCLI would warn
            # that sys.argv holds arguments too, which, for the `gvt` command, are the very same ones.
            # A setting at an old or wrong path is refused first, with where it is now (modules/overrides.py).
            check_command_settings(parser, args)
            self.config = parser.parse_args(args)

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_class_arguments(Tracking, "tracking")
            parser.add_class_arguments(PredictionSettings, "prediction")  # what `gvt predict` draws
            # The vocabulary is built by the data module; the model's embedding size follows it.
            parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
            if "weights_only" in parser.get_defaults():  # fit/validate/test/predict with --ckpt_path
                # Checkpoints are read as tensors and plain containers only: no pickled code runs.
                parser.set_defaults({"weights_only": True})

        def _parse_ckpt_path(self) -> None:
            # Lightning reads the checkpoint's hyperparameters here; a missing or truncated file gets a clear
            # error first, before any run starts.
            config = self.config.get(str(self.config.get("subcommand")), self.config)
            ckpt_path = config.get("ckpt_path") if hasattr(config, "get") else None
            if ckpt_path == "last":
                # Lightning would look for last.ckpt in the new run's (empty) folder and silently start over.
                ckpt_path = find_last_checkpoint(config.trainer.default_root_dir or "runs", config.tracking.name)
                config.ckpt_path = ckpt_path
            if ckpt_path and ckpt_path not in ("best", "hpc", "registry"):
                read_checkpoint(ckpt_path)
            super()._parse_ckpt_path()

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except ValueError as err:
                # jsonargparse wraps a constructor's error in a ValueError of its own; bad input is the cause it
                # carries, anything else stays as it was raised
                cause = project_error_in(err)
                if cause is None:
                    raise
                raise cause from None

        def predict(self, model, datamodule=None, ckpt_path=None, **kwargs):
            model.prediction = self._get(self.config_init, "prediction")
            if ckpt_path is not None:
                # The model is all a prediction takes from the checkpoint (weights, vocabulary, tokenizer): restoring
                # the training run's callback states too would only warn that their folders have moved.
                load_weights(model, ckpt_path)
            return self.trainer.predict(model, datamodule=datamodule, **kwargs)

        def instantiate_trainer(self, **kwargs):
            config = self._get(self.config_init, "trainer", default={})
            callbacks = config.get("callbacks") or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            if config.get("enable_checkpointing", True) is not False and not any(
                isinstance(cb, ModelCheckpoint) for cb in callbacks
            ):
                # last.ckpt always exists, so `--ckpt_path last` resumes and `gvt sample` has a stable path.
                kwargs["callbacks"] = [*callbacks, ModelCheckpoint(save_last=True)]
            if config.get("logger") is None:  # not set in the config: CSV always, W&B beside it
                tracking: Tracking = self._get(self.config_init, "tracking")
                kwargs["logger"] = tracking.loggers(
                    save_dir=config.get("default_root_dir") or "runs",
                    family=self.model.family,
                    config=self.config.get(str(self.subcommand), self.config).as_dict(),
                )
            return super().instantiate_trainer(**kwargs)

    # a few third-party messages that do not apply and Lightning's banner, by exact text, for this run only
    with known_warnings_filtered(), lightning_banner_dropped():
        GVTCLI(
            GeneratorModule,
            SequenceDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            trainer_defaults={"default_root_dir": "runs", "callbacks": [DivergenceMonitor(), FlushLogsOnCheckpoint()]},
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf"} if _has_omegaconf() else {},
            args=args,
        )


def _has_omegaconf() -> bool:
    try:
        import omegaconf  # noqa: F401

        return True
    except ImportError:
        return False


def find_last_checkpoint(root: str, name: Optional[str]) -> str:
    """The newest ``<root>/<name>/version_*/checkpoints/last.ckpt`` (any run name when ``name`` is None)."""
    pattern = f"{name or '*'}/version_*/checkpoints/last.ckpt"
    found = sorted(Path(root).glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise MissingInputError(f"--ckpt_path last: no {pattern} under {root}; nothing to resume")
    return str(found[-1])


def check_config_files(args: list[str]) -> None:
    """A YAML syntax error names its file (jsonargparse would only say "<unicode string>")."""
    for flag, value in zip(args, args[1:]):
        if flag in ("--config", "-c", "--model", "--data", "--trainer", "--tracking") and value.endswith((".yaml", ".yml")):
            if os.path.isfile(value):
                try:
                    with open(value, encoding="utf-8") as f:
                        yaml.safe_load(f)
                except yaml.YAMLError as err:
                    raise ConfigFileError(f"config {value} is not valid YAML: {err}") from None


def is_user_error(err: BaseException) -> bool:
    """Bad input (a data file, a setting, a checkpoint): the project's error type. Anything else is a bug."""
    return isinstance(err, GvtError)


def project_error_in(err: BaseException) -> Optional[GvtError]:
    """The project error in ``err``'s chain of causes, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, GvtError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def run_command(command: str, call: Callable[[], int]) -> int:
    """``call()``'s exit status; bad input is reported as one clear line (exit 2), any other error keeps its
    traceback (GVT_DEBUG=1 shows the traceback of bad input too)."""
    try:
        return call()
    except KeyboardInterrupt:
        print("gvt: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("GVT_DEBUG") or not is_user_error(err):
            raise
        print(f"gvt {command}: error: {err}", file=sys.stderr)
        return 2


def _lightning_command(argv: list[str]) -> int:
    check_config_files(argv[1:])
    _lightning_cli(argv)
    return 0


def _sample_command(argv: list[str]) -> int:
    from modules.sample_cli import main as sample_main  # the model code (and Lightning) load only for `gvt sample`

    return sample_main(argv)


def main(argv: Optional[list[str]] = None, extra_commands: Optional[dict[str, Callable[[list[str]], int]]] = None,
         help_text: str = HELP) -> int:
    """The library's commands: fit, validate, test, predict and sample. ``gvt`` (experiments/gvt.py) passes the
    experiment commands as ``extra_commands`` (name -> handler of the remaining arguments) and its own help."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text)
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        return run_command(command, lambda: _lightning_command(argv))
    if command == "sample":
        return run_command(command, lambda: _sample_command(rest))
    if extra_commands and command in extra_commands:
        return run_command(command, lambda: extra_commands[command](rest))
    print(f"gvt: unknown command {command!r}\n\n{help_text}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
