"""The project's error type for bad input: a data file, a setting, a config file, a checkpoint.

``gvt`` shows a ``GvtError`` as one line naming the file or setting at fault and exits with status 2; any other
exception is a bug and keeps its traceback (exit 1). Each subclass also derives from the built-in type that code
catching it before expected (``ValueError``, ``FileNotFoundError``), so ``except ValueError`` still sees it.
"""


class GvtError(Exception):
    """Bad input the user can fix; the message names the file, line or setting at fault."""


class ConfigError(GvtError, ValueError):
    """A setting (``model.lr``, ``data.batch_size``, a command-line option, a preset) cannot be used as given."""


class ConfigFileError(ConfigError):
    """A config file (YAML) is missing or cannot be parsed."""


class MissingInputError(GvtError, FileNotFoundError):
    """A file or folder the user named does not exist (or holds nothing to work on)."""


class DataError(GvtError, ValueError):
    """A data file or data setting cannot be used as given."""


class VocabularyMismatchError(DataError):
    """A checkpoint was trained with a different vocabulary than the data it is used with."""


class CheckpointError(GvtError, ValueError):
    """A checkpoint file cannot be used as given."""
