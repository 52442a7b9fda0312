"""Data shared by every model family: vocabulary, the batch type, data modules, synthetic oracles."""

from modules.data.base import SequenceDataModule
from modules.data.batch import Batch, Example, collate
from modules.data.errors import DataError, VocabularyMismatchError
from modules.data.oracle_datamodule import OracleDataModule
from modules.data.tasks import TaskDataModule
from modules.data.text_datamodule import TextDataModule
from modules.data.vocab import Vocab

__all__ = [
    "Batch", "DataError", "Example", "OracleDataModule", "SequenceDataModule", "TaskDataModule", "TextDataModule",
    "Vocab", "VocabularyMismatchError", "collate",
]
