"""ULMFiT's fine-tuning recipe (modules/ulmfit.py, SentenceClassifier): the layer groups, the discriminative
rates per group, the slanted triangular schedule's shape at given steps, and which parameters get gradients (and
move) at each stage of gradual unfreezing, in a real Lightning fit."""

import pytest
import pytorch_lightning as pl
import torch

from experiments.core.runner import _quiet_lightning
from modules import ulmfit as U
from modules.data.batch import Example, collate
from modules.data.vocab import NULL_ID
from modules.errors import ConfigError
from modules.models.classifier import SentenceClassifier

V = 40
BODY_ARGS = {"lstm": dict(emb_dim=8, hidden_dim=12, num_layers=2, dropout=0.0),
             "transformer": dict(d_model=8, n_heads=2, n_encoder_layers=2, d_ff=16, dropout=0.0, max_len=32)}


def classifier(body="lstm", **kw):
    torch.manual_seed(0)
    return SentenceClassifier(V, body=body, body_args=BODY_ARGS[body], head_dropout=0.0, **kw)


@pytest.mark.parametrize("body, expected", [
    ("lstm", [["body.emb."], ["_l0"], ["_l1"], ["head."]]),
    ("transformer", [["body.tok_emb."], ["body.blocks.0."], ["body.blocks.1."], ["body.ln_f.", "head."]]),
])
def test_layer_groups_go_bottom_to_top_and_hold_every_parameter_once(body, expected):
    net = classifier(body).net
    groups = U.layer_groups(net)
    assert len(groups) == 4
    for group, marks in zip(groups, expected):
        assert group and all(any(m in name for m in marks) for name, _ in group), [n for n, _ in group]
    names = [n for g in groups for n, _ in g]
    assert sorted(names) == sorted(n for n, _ in net.named_parameters())


def test_discriminative_rates_divide_by_the_factor_per_group_below_the_head():
    assert U.discriminative_lrs(1e-2, 4, 2.6) == pytest.approx([1e-2 / 2.6 ** 3, 1e-2 / 2.6 ** 2, 1e-2 / 2.6, 1e-2])
    assert U.discriminative_lrs(1e-2, 3, 1.0) == pytest.approx([1e-2] * 3)
    with pytest.raises(ValueError, match="factor must be >= 1"):
        U.discriminative_lrs(1e-2, 3, 0.5)


@pytest.mark.parametrize("body", ["lstm", "transformer"])
def test_the_optimiser_gives_each_layer_group_its_rate(body):
    model = classifier(body, lr=1e-2, lr_factor=2.6)
    optimizer = model.configure_optimizers()
    rate_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    expected = U.discriminative_lrs(1e-2, 4, 2.6)
    for group, lr in zip(model.groups, expected):
        for name, p in group:
            assert rate_of[id(p)] == pytest.approx(lr), name
    # weight decay still only on matrices, inside every layer group
    assert all((g["weight_decay"] > 0) == all(p.dim() >= 2 for p in g["params"]) for g in optimizer.param_groups)


@pytest.mark.parametrize("step, expected", [
    (0, 1 / 32),  # starts at lr / ratio
    (5, (1 + 0.5 * 31) / 32),  # half way up the short rise (cut = 10 of 100)
    (10, 1.0),  # the peak at cut
    (55, (1 + 0.5 * 31) / 32),  # half way down the long fall
    (100, 1 / 32),  # back to lr / ratio at the end
    (130, 1 / 32),  # and there after it
])
def test_slanted_triangular_schedule_at_given_steps(step, expected):
    assert U.stlr(step, 100, 0.1, 32) == pytest.approx(expected)


def test_slanted_triangular_schedule_rises_briefly_and_falls_long():
    curve = [U.stlr(t, 200) for t in range(201)]
    peak = curve.index(max(curve))
    assert peak == 20  # cut_frac 0.1
    assert all(a < b for a, b in zip(curve[:peak], curve[1:peak + 1]))
    assert all(a > b for a, b in zip(curve[peak:-1], curve[peak + 1:]))


def test_trainable_groups_add_one_per_stage_from_the_top():
    assert [U.trainable_groups(t, 4, 5) for t in (0, 4, 5, 9, 10, 15, 100)] == [1, 1, 2, 2, 3, 4, 4]
    assert U.trainable_groups(0, 4, 0) == 4  # no unfreezing: all train from the start
    assert U.fully_unfrozen_at(4, 5) == 15 and U.fully_unfrozen_at(4, 0) == 0


def _batches(n=12):
    examples = [Example([NULL_ID], [10 + (i % 7), 11 + (i % 5), 12], i % 2) for i in range(n)]
    return torch.utils.data.DataLoader(examples, batch_size=4, collate_fn=collate)


class _Record(pl.Callback):
    """Per update: which layer groups hold a gradient, and every group's learning rate."""

    def __init__(self):
        self.with_grad, self.lrs = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.with_grad.append([any(p.grad is not None and bool(p.grad.abs().sum() > 0) for _, p in g)
                               for g in pl_module.groups])
        self.lrs.append({id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]})


def _fit(model, updates):
    record = _Record()
    with _quiet_lightning():
        trainer = pl.Trainer(accelerator="cpu", max_steps=updates, max_epochs=-1, logger=False, callbacks=[record],
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(model, train_dataloaders=_batches(), val_dataloaders=_batches(4))
    return record


@pytest.mark.parametrize("body", ["lstm", "transformer"])
def test_gradual_unfreezing_trains_the_head_first_then_one_more_group_per_stage(body):
    model = classifier(body, lr=1e-2, lr_factor=2.6, unfreeze_every=2)
    before = [[p.detach().clone() for _, p in g] for g in model.groups]
    record = _fit(model, 8)
    # 4 groups (embedding, layer 0, layer 1, head), one more every 2 updates
    expected = [[False, False, False, True]] * 2 + [[False, False, True, True]] * 2 + \
               [[False, True, True, True]] * 2 + [[True, True, True, True]] * 2
    assert record.with_grad == expected
    # every group moved by the end, and none is left frozen
    assert all(not torch.equal(p, b) for g, bs in zip(model.groups, before) for (_, p), b in zip(g, bs))
    assert all(p.requires_grad for p in model.parameters())


def test_a_frozen_group_does_not_move_not_even_by_weight_decay():
    model = classifier("lstm", lr=1e-2, lr_factor=2.6, unfreeze_every=100, weight_decay=0.1)
    embedding = model.groups[0][0][1].detach().clone()
    head = model.groups[-1][0][1].detach().clone()
    _fit(model, 3)
    assert torch.equal(model.groups[0][0][1], embedding)
    assert not torch.equal(model.groups[-1][0][1], head)


def test_without_unfreezing_every_group_trains_from_the_first_update():
    record = _fit(classifier("lstm", lr=1e-2), 2)
    assert record.with_grad == [[True] * 4] * 2


def test_the_fit_follows_the_slanted_triangular_schedule_in_every_group():
    model = classifier("lstm", lr=1e-2, lr_factor=2.6, schedule="stlr", total_updates=20, cut_frac=0.1, ratio=32)
    record = _fit(model, 20)
    peaks = model.group_lrs()
    for step in (0, 1, 2, 11, 19):
        for group, peak in zip(model.groups, peaks):
            for name, p in group:
                assert record.lrs[step][id(p)] == pytest.approx(peak * U.stlr(step, 20, 0.1, 32)), (step, name)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr_factor=0.5), "model.lr_factor must be >= 1"),
    (dict(schedule="cosine"), "model.schedule must be 'constant' or 'stlr'"),
    (dict(schedule="stlr", total_updates=0), "model.schedule='stlr' needs total_updates >= 1"),
    (dict(unfreeze_every=-1), "model.unfreeze_every must be >= 0"),
])
def test_bad_recipe_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        classifier("lstm", **kwargs)
