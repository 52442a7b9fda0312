"""Third-party messages that do not apply to this package, filtered one by one and only around our own runs.

Everything the package can fix at the cause is fixed there (modules/tracking.py: the CSV log folder and the W&B
settings; modules/cli.py: the LightningCLI argv). What is left comes from inside a library and cannot be turned
off by any setting, so each message is filtered by its exact text and the module that issues it, inside a
``with known_warnings_filtered():`` block (``warnings.catch_warnings``): nothing changes for the rest of the
process, and any other warning, of the same category or the same module, still shows.

- ``LeafSpec``: pytorch_lightning's ``_pytree`` builds ``LeafSpec()`` objects, which this torch deprecates (a
  FutureWarning on every fit). Nothing in the package touches it; a newer Lightning release drops it.
- "does not have many workers": our data are token ids held in memory and collated in microseconds, so loader
  workers would add process start-up and copies, not speed (Lightning says so on machines with more than two
  cores; ``data.num_workers`` is still there for whoever wants workers).
- Lightning's LitLogger tip, an advertisement logged at INFO level at every Trainer construction.
- "The dirpath has changed": ``gvt fit --ckpt_path last`` resumes into a new version folder by design (the old
  one keeps its logs); the checkpoint callback's best-k bookkeeping of the old folder does not apply there.

``lightning_banner_dropped()`` (the ``gvt fit|validate|test|predict`` commands) also drops Lightning's
informational banner lines by their exact start (``BANNER_LINES``: the device lines, the seed line, "Loading
`train_dataloader` ...", "`Trainer.fit` stopped: `max_steps=N` reached"), which say nothing the command's own
config does not; the model summary, the progress bar and every warning still show.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import Iterator

# (message regex, category, issuing module regex): each matches one message of one module, nothing else.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (re.escape("`isinstance(treespec, LeafSpec)` is deprecated"), FutureWarning,
     r"pytorch_lightning\.utilities\._pytree"),
    (r"The '\w+' does not have many workers which may be a bottleneck", UserWarning,
     r"pytorch_lightning\.trainer\.connectors\.data_connector"),
    (r"The dirpath has changed from .* therefore `best_model_score`", UserWarning,
     r"pytorch_lightning\.callbacks\.model_checkpoint"),
)
# INFO lines of Lightning's rank-zero loggers dropped by their exact start.
KNOWN_INFO_LINES: tuple[str, ...] = ("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",)
_RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                      "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


# Lightning's informational banner, dropped by ``lightning_banner_dropped`` only.
BANNER_LINES: tuple[str, ...] = ("GPU available: ", "TPU available: ", "HPU available: ", "Seed set to ",
                                 "Loading `train_dataloader` to estimate number of stepping batches",
                                 "`Trainer.fit` stopped: ")
_SEED_LOGGERS = ("lightning_fabric.utilities.seed", "lightning.fabric.utilities.seed")


class _DropKnownLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


@contextlib.contextmanager
def _lines_dropped(starts: tuple[str, ...], logger_names: tuple[str, ...]) -> Iterator[None]:
    """Drop the records starting with ``starts`` from the named loggers for the duration of the block."""
    drop = _DropKnownLines(starts)
    loggers = [logging.getLogger(name) for name in logger_names]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


@contextlib.contextmanager
def lightning_banner_dropped() -> Iterator[None]:
    """Drop ``BANNER_LINES`` from Lightning's loggers for the duration of the block (nothing process-wide)."""
    with _lines_dropped(BANNER_LINES, _RANK_ZERO_LOGGERS + _SEED_LOGGERS):
        yield


@contextlib.contextmanager
def known_warnings_filtered() -> Iterator[None]:
    """Filter exactly the messages listed above, for the duration of the block (usable as a decorator too)."""
    with warnings.catch_warnings(), _lines_dropped(KNOWN_INFO_LINES, _RANK_ZERO_LOGGERS):
        for message, category, module in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


__all__ = ["BANNER_LINES", "KNOWN_INFO_LINES", "KNOWN_WARNINGS", "known_warnings_filtered", "lightning_banner_dropped"]
