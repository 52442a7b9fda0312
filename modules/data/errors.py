"""Errors for bad input. Each names the file, line or setting at fault."""


class DataError(ValueError):
    """A data file or data setting cannot be used as given."""


class VocabularyMismatchError(ValueError):
    """A checkpoint was trained with a different vocabulary than the data it is used with."""
