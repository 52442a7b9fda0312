"""Experiment tracking: a CSV log always, W&B beside it (offline unless an account is configured).

W&B never needs the network here: with no API key it runs offline and ``wandb sync <run dir>/wandb`` uploads
later. If W&B cannot start at all, the run goes on with the CSV log and one warning.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Literal, Optional, Sequence

from pytorch_lightning.loggers import CSVLogger, Logger

from modules.errors import ConfigError

log = logging.getLogger(__name__)
WandbMode = Literal["auto", "online", "offline", "disabled"]


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto``: online with credentials, offline without; the WANDB_MODE environment variable wins."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ConfigError(f"tracking.wandb_mode must be auto, online, offline or disabled, got {mode!r}")
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    if mode == "auto":
        return "online" if wandb_credentials_present() else "offline"
    return mode


class Tracking:
    """Where and how a run is tracked (the ``tracking:`` section of a config).

    Args:
        project: W&B project.
        name: run name; also the CSV log folder name under the trainer's ``default_root_dir``.
        group: W&B group (a sweep puts all its runs in one group).
        job_type: W&B job type; defaults to the model family.
        tags: W&B tags (batch size, seed and condition are added by sweeps).
        wandb_mode: ``auto`` (online if an account is configured, else offline), ``online``, ``offline``,
            ``disabled`` (tests).
        init_timeout: seconds W&B may take to start before the run goes on without it.
        version: the run folder name under ``name`` (default: the next ``version_<k>``).
    """

    def __init__(
        self,
        project: str = "gan-vs-transformer",
        name: Optional[str] = None,
        group: Optional[str] = None,
        job_type: Optional[str] = None,
        tags: Sequence[str] = (),
        wandb_mode: WandbMode = "auto",
        init_timeout: float = 30.0,
        version: Optional[str] = None,
    ):
        resolve_wandb_mode(wandb_mode)  # validate early
        self.project, self.name, self.group = project, name, group
        self.job_type, self.tags, self.wandb_mode = job_type, list(tags), wandb_mode
        self.init_timeout, self.version = init_timeout, version

    def loggers(self, save_dir: str, family: str, config: Optional[dict] = None,
                concurrent: bool = False) -> list[Logger]:
        """The CSV logger, and a WandbLogger on a new W&B run unless W&B is disabled. ``concurrent``: the new run
        does not end a W&B run already open in this process (vectorised seeds log S runs at once; each is
        finished by its caller)."""
        csv_logger = CSVLogger(save_dir=save_dir, name=self.name or family, version=self.version)
        # The CSV logger starts first, on its fresh folder: started after W&B has written into that folder, it
        # would take the folder for an old run's ("exists and is not empty ... will be deleted").
        _ = csv_logger.experiment
        loggers: list[Logger] = [csv_logger]
        mode = resolve_wandb_mode(self.wandb_mode)
        if mode == "disabled":
            return loggers
        try:
            import wandb
            from pytorch_lightning.loggers import WandbLogger

            if os.environ.get("WANDB_MODE") == "":
                # Empty means unset, as in resolve_wandb_mode; wandb itself would refuse the empty value.
                del os.environ["WANDB_MODE"]
            if wandb.run is not None and not concurrent:  # one W&B run per training run in a sweep's process
                wandb.finish()

            run_dir = Path(csv_logger.log_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            # The run starts here, so a failure is caught here and not mid-training, and with exactly these
            # settings: WandbLogger would also pass wandb's deprecated `anonymous` setting (a warning per run) and
            # set WANDB_MODE in the environment of the whole process.
            run = wandb.init(
                project=self.project,
                name=self.name,
                dir=str(run_dir),
                mode=mode,
                group=self.group,
                job_type=self.job_type or family,
                tags=self.tags,
                config=config,
                settings=_quiet_settings(self.init_timeout),
                reinit="create_new" if concurrent else None,
            )
            # Lightning's own x-axis for every metric, as WandbLogger defines it for the runs it starts
            run.define_metric("trainer/global_step")
            run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
            loggers.append(WandbLogger(experiment=run, project=self.project, name=self.name, save_dir=str(run_dir),
                                       offline=mode == "offline"))
        except Exception as err:  # tracking must never take a run down
            log.warning("W&B could not start (%s: %s); continuing with the CSV log only in %s",
                        type(err).__name__, err, csv_logger.log_dir)
        return loggers


def _quiet_settings(init_timeout: float):
    import wandb

    # No console noise in sweeps of many small runs; a bounded wait when online W&B is unreachable.
    return wandb.Settings(silent=True, console="off", init_timeout=init_timeout, x_disable_stats=True)
