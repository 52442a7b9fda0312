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
)
# INFO lines of Lightning's rank-zero loggers dropped by their exact start.
KNOWN_INFO_LINES: tuple[str, ...] = ("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",)
_RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                      "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropKnownLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(KNOWN_INFO_LINES)


@contextlib.contextmanager
def known_warnings_filtered() -> Iterator[None]:
    """Filter exactly the messages listed above, for the duration of the block (usable as a decorator too)."""
    drop = _DropKnownLines()
    loggers = [logging.getLogger(name) for name in _RANK_ZERO_LOGGERS]
    with warnings.catch_warnings():
        for message, category, module in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)


__all__ = ["KNOWN_INFO_LINES", "KNOWN_WARNINGS", "known_warnings_filtered"]
