"""One GAN step, read top down (issue 11 item 8): the estimator is one object whose generator loss is all
`training_step` asks of it (besides the fakes D trains on), TextGAN's settings are typed nested sections that
LightningCLI shows and checks, and text_gan.py stays short."""

from pathlib import Path

import pytest
import torch
import yaml

from modules.models import TextGAN, TransformerSeq2Seq
from modules.models.configs import FLAT_TO_NESTED, GameConfig, nest_flat_args
from tests.test_cli import gvt
from tests.test_gan import fit, tiny_data, tiny_gan

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"generator", "discriminator", "game", "evaluation"}


class PlantedEstimator(torch.nn.Module):
    """Wraps the real estimator and records every call TextGAN makes into it."""

    def __init__(self, real):
        super().__init__()
        self.real, self.calls = real, []

    def draw(self, gan, batch_size, L, generator=None):
        self.calls.append("draw")
        return self.real.draw(gan, batch_size, L, generator)

    def fakes(self, gan, batch, L, generator=None, noise=None):
        self.calls.append("fakes")
        return self.real.fakes(gan, batch, L, generator, noise)

    def generator_loss(self, gan, batch, real, real_pad, L, noise=None, fakes=None):
        self.calls.append("generator_loss")
        loss, extras = self.real.generator_loss(gan, batch, real, real_pad, L, noise, fakes)
        return loss, {**extras, "train/planted_extra": 7.0}

    def __getattr__(self, name):  # anything else TextGAN reached for would show up as a missing method
        if name in ("real", "calls") or name.startswith("_"):
            return super().__getattr__(name)
        raise AttributeError(f"TextGAN called estimator.{name}, not one of the estimator's entries")


@pytest.mark.parametrize("estimator", ["gumbel", "reinforce"])
def test_training_step_asks_the_estimator_for_fakes_per_d_step_and_one_generator_loss(estimator):
    dm = tiny_data()
    model = tiny_gan(dm, estimator=estimator, d_steps=2)
    model.estimator = PlantedEstimator(model.estimator)
    rows = fit(model, dm, limit_train_batches=2)
    # each player update draws its noise first, then asks for its fakes or its loss
    assert model.estimator.calls == ["draw", "fakes", "draw", "fakes", "draw", "generator_loss"] * 2
    assert rows[-1]["train/planted_extra"] == 7.0  # the estimator's own extras are logged as it names them
    assert model.g_updates == 2


def test_the_estimator_is_chosen_once_from_the_game_section():
    dm = tiny_data()
    assert type(tiny_gan(dm, estimator="gumbel").estimator).__name__ == "GumbelEstimator"
    reinforce = tiny_gan(dm, estimator="reinforce").estimator
    assert type(reinforce).__name__ == "ReinforceEstimator"
    assert {n for n, _ in reinforce.named_buffers()} == {"baseline", "baseline_weight"}


def test_text_gan_module_stays_under_300_lines():
    lines = (ROOT / "modules" / "models" / "text_gan.py").read_text().count("\n")
    assert lines < 300, f"modules/models/text_gan.py has {lines} lines"


@pytest.mark.parametrize("config, sections", [
    ("configs/experiment/gan_gumbel_oracle_small.yaml", SECTIONS),
    ("configs/experiment/transformer_oracle_small.yaml", {"evaluation"}),
])
def test_print_config_shows_the_nested_sections(config, sections):
    out = gvt("fit", "--config", config, "--print_config")
    assert out.returncode == 0, out.stderr
    init = yaml.safe_load(out.stdout)["model"]["init_args"]
    assert sections <= {k for k, v in init.items() if isinstance(v, dict)}
    assert init["evaluation"]["num_eval_samples"] in (250, 500)  # set in the YAML's evaluation section
    if "generator" in sections:
        assert init["generator"]["arch"] == "lstm" and init["game"]["pretrain_epochs"] == 2
        assert set(init["game"]) == set(GameConfig.__dataclass_fields__)


def test_a_misspelled_nested_key_in_a_yaml_is_refused_by_name(tmp_path):
    config = yaml.safe_load((ROOT / "configs/experiment/gan_gumbel_oracle_small.yaml").read_text())
    config["model"]["init_args"]["game"]["d_stepz"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = gvt("fit", "--config", str(path), "--print_config")
    assert out.returncode != 0 and "d_stepz" in out.stderr and "game" in out.stderr


def test_a_bad_nested_value_names_its_section():
    out = gvt("fit", "--config", "configs/experiment/gan_gumbel_oracle_small.yaml",
              "--model.init_args.game.d_steps", "0", "--trainer.max_epochs", "0")
    assert out.returncode != 0 and "model.game.d_steps must be >= 1" in out.stderr


def test_sections_take_dicts_and_refuse_unknown_keys_by_name():
    model = TextGAN(30, generator={"arch": "lstm", "lr": 3e-3}, game={"d_steps": 2})
    assert model.g_config.lr == 3e-3 and model.game.d_steps == 2 and model.hparams["game"]["d_steps"] == 2
    with pytest.raises(ValueError, match=r"model\.generator takes no setting\(s\) \['lrr'\]"):
        TextGAN(30, generator={"lrr": 1e-3})
    with pytest.raises(ValueError, match=r"model\.evaluation takes no setting"):
        TransformerSeq2Seq(30, evaluation={"num_samples": 3})


def test_a_checkpoint_rebuilds_the_same_sections(tmp_path):
    model = TextGAN(30, generator={"arch": "lstm", "emb_dim": 8, "hidden_dim": 8, "z_dim": 3},
                    discriminator={"filter_sizes": (2,), "num_filters": 4, "frozen": True},
                    game={"estimator": "reinforce", "discount": 0.5}, evaluation={"nll_z_samples": 4})
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, tmp_path / "m.ckpt")
    saved = torch.load(tmp_path / "m.ckpt", weights_only=True)  # plain dicts: no pickled classes
    again = TextGAN(**saved["hyper_parameters"])
    again.load_state_dict(saved["state_dict"])
    assert (again.g_config, again.d_config, again.game, again.evaluation) == \
        (model.g_config, model.d_config, model.game, model.evaluation)


def test_every_former_flat_argument_has_one_nested_place():
    places = list(FLAT_TO_NESTED.values())
    assert len(places) == len(set(places))  # no two old names land on one setting
    assert nest_flat_args({"g_lr": 1e-3, "freeze_discriminator": True, "d_steps": 2, "num_eval_samples": 5}) == {
        "generator": {"lr": 1e-3}, "discriminator": {"frozen": True}, "game": {"d_steps": 2},
        "evaluation": {"num_eval_samples": 5}}
    TextGAN(30, **nest_flat_args({name: getattr_default(name) for name in FLAT_TO_NESTED}))
    with pytest.raises(ValueError, match="model.g_lrr"):
        nest_flat_args({"g_lrr": 1e-3})


def getattr_default(flat_name: str):
    """The default of the setting a former flat name maps to."""
    from modules.models import configs

    section, setting = FLAT_TO_NESTED[flat_name]
    cls = {"generator": configs.GeneratorConfig, "discriminator": configs.DiscriminatorConfig,
           "game": configs.GameConfig, "evaluation": configs.EvaluationConfig}[section]
    return getattr(cls(), setting)
