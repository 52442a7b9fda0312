"""A checkpoint writer for resume tests (imported by the tests as ``from checkpointing import SaveAtEpochEnd``)."""

import pytorch_lightning as pl


class SaveAtEpochEnd(pl.Callback):
    """Writes the trainer's full checkpoint where ModelCheckpoint would without a validation loop (at the train
    epoch's end), but keeps no callback state, so a trainer resumed from it need not be given this callback again
    (Lightning warns about every callback state in a checkpoint that the resuming trainer lacks)."""

    def __init__(self, path):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.save_checkpoint(self.path)
