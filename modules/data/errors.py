"""Errors for bad data (defined with the project's other error types in modules/errors.py)."""

from modules.errors import DataError, VocabularyMismatchError

__all__ = ["DataError", "VocabularyMismatchError"]
