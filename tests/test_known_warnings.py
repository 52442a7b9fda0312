"""Third-party messages are filtered one by one, only inside our runs: nothing process-wide, nothing broad."""

import logging
import warnings

import pytest

from modules.known_warnings import known_warnings_filtered

LEAFSPEC = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()`"
WORKERS = "The 'train_dataloader' does not have many workers which may be a bottleneck. Consider increasing it."
TIP = ("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](https://pypi.org/"
       "project/litlogger/) to enable LitLogger")


def emitted(message: str, category: type[Warning], module: str) -> list[str]:
    """The messages that get through when ``module`` warns ``message`` (both inside and outside the filter)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with known_warnings_filtered():
            warnings.warn_explicit(message, category, "x.py", 1, module=module)
        warnings.warn_explicit(message, category, "x.py", 2, module=module)
    return [f"{w.lineno}" for w in caught]


@pytest.mark.parametrize("message, category, module", [
    (LEAFSPEC, FutureWarning, "pytorch_lightning.utilities._pytree"),
    (WORKERS, UserWarning, "pytorch_lightning.trainer.connectors.data_connector"),
])
def test_a_known_message_is_filtered_inside_the_block_only(message, category, module):
    assert emitted(message, category, module) == ["2"]  # line 1 warned inside the block, line 2 after it


@pytest.mark.parametrize("message, category, module", [
    ("`foo` is deprecated, use `bar`", FutureWarning, "pytorch_lightning.utilities._pytree"),  # same module
    (LEAFSPEC, FutureWarning, "my_package.trees"),  # same text, another module
    ("something is deprecated", DeprecationWarning, "pytorch_lightning.core.module"),  # no broad deprecation filter
])
def test_other_messages_still_show_inside_the_block(message, category, module):
    assert emitted(message, category, module) == ["1", "2"]


def test_the_litlogger_tip_is_dropped_inside_the_block_only(caplog):
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="pytorch_lightning.utilities.rank_zero"):
        with known_warnings_filtered():
            logger.info(TIP)
            logger.info("GPU available: False, used: False")
        logger.info(TIP)
    assert [r.getMessage()[:8] for r in caplog.records] == ["GPU avai", TIP[:8]]


def test_the_real_leafspec_warning_is_filtered_inside_the_block_only():
    """The message as this torch and Lightning really issue it. If a release stops issuing it, this fails: then
    its entry in modules/known_warnings.py is to be removed."""
    from pytorch_lightning.utilities._pytree import _tree_flatten

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with known_warnings_filtered():
            _tree_flatten({"a": [1, 2]})
        inside = len(caught)
        _tree_flatten({"a": [1, 2]})
    assert inside == 0
    assert {str(w.message)[:47] for w in caught} == {LEAFSPEC[:47]}


def test_the_sweep_runner_scope_leaves_filters_and_logger_levels_as_they_were():
    from experiments.core.runner import _quiet_lightning

    filters, level = list(warnings.filters), logging.getLogger("pytorch_lightning").level
    with _quiet_lightning():
        assert logging.getLogger("pytorch_lightning").level == logging.WARNING
    assert warnings.filters == filters and logging.getLogger("pytorch_lightning").level == level


def test_lightning_banner_is_dropped_inside_its_block_only(caplog):
    from modules.known_warnings import lightning_banner_dropped

    rank_zero, seed = (logging.getLogger("pytorch_lightning.utilities.rank_zero"),
                       logging.getLogger("lightning_fabric.utilities.seed"))
    with caplog.at_level(logging.INFO):
        with lightning_banner_dropped():
            rank_zero.info("GPU available: False, used: False")
            rank_zero.info("`Trainer.fit` stopped: `max_steps=3` reached.")
            seed.info("Seed set to 0")
            rank_zero.info("Restoring states from the checkpoint path at x.ckpt")  # not banner: shows
        rank_zero.info("GPU available: False, used: False")
    assert [r.getMessage()[:9] for r in caplog.records] == ["Restoring", "GPU avail"]
