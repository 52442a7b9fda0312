"""
Benchmark: training throughput of S seeds trained as one vectorised model against S single runs, and of
Lightning's training step against a plain torch loop.

On the small oracle with the quick preset's models (the tiny Transformer, d_model 32, as MLE model and GAN
generator; the GAN's CNN discriminator), for each family and batch size:

- ``sequential``: S single runs one after another, each trained by Lightning's fit loop (the package's single-run
  path, ``engine: lightning``: ``training_step``, manual optimization for the GAN, logging, the budget callback),
  timed from the end of its warm-up to the end of training; ``start-up`` is the rest of one fit (set-up, loaders,
  the warm-up updates), which a single run pays once;
- ``vectorised``: the same S seeds as one vectorised model (``modules.models.seed_group.SeedGroup``, what the
  experiments run by default); the ratio is vectorised samples/s over sequential samples/s, in this process;
- for the GAN, ``plain``: one seed's updates in a plain torch loop over the very same update functions (noise drawn
  first, ``discriminator_update_loss`` / ``generator_update_loss``, clipping, the optimisers, the log values), and
  Lightning's samples/s over the plain loop's (the share of Lightning's per-step overhead).

Only training is timed (evaluation is the same code in every case). Every timed loop runs after a warm-up.

    python benchmarks/bench_seeds.py [--seeds 8] [--batch-sizes 1,4,16] [--updates 60] [--device cpu|cuda]
"""

import argparse
import logging
import time

import pytorch_lightning as pl
import torch

from experiments.core.datamodules import build_datamodule
from experiments.core.families import get_family
from experiments.core.presets import get_preset
from experiments.core.runner import BudgetCallback, _Batches, _quiet_lightning, optimizer_steps_per_update
from experiments.q2_batch_size.sweep import sweep_specs
from modules.models.gan_losses import update_log
from modules.models.seed_group import SeedGroup
from modules.models.transformer_seq2seq import generator_optimizer


def spec_of(family: str, batch_size: int, seed: int) -> dict:
    settings = get_preset("quick", pilot=False).sweep
    settings.families, settings.batch_sizes, settings.seeds = [family], [batch_size], [seed]
    settings.reference_batch_size, settings.budget, settings.budget_value = batch_size, "steps", 10_000
    return next(s for s in sweep_specs(settings, {"wandb_mode": "disabled"}) if s["family"] == family)


def build(spec: dict, device: str):
    """Seed, data and model as a single run builds them, set up on the data (vocabulary, lengths)."""
    pl.seed_everything(spec["seed"], workers=True, verbose=False)
    dm = build_datamodule(spec["data"], spec["batch_size"], spec["seed"])
    dm.prepare()
    family = get_family(spec["family"])
    model = family.load_class()(vocab_size=dm.vocab_size, **family.init_kwargs(spec["model"]))
    trainer = pl.Trainer(accelerator=device, devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.test(model, datamodule=dm, verbose=False)
    return model.to(device), dm


class _StepClock(pl.Callback):
    """The time from the start of training batch ``warmup`` (0-based) to the end of training: the fit loop's
    updates after the warm-up, without Lightning's start-up (set-up, loaders, the first batches)."""

    def __init__(self, warmup: int):
        self.warmup, self.batches, self.start, self.end = warmup, 0, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.batches == self.warmup:
            self.start = time.perf_counter()
        self.batches += 1

    def on_train_end(self, trainer, pl_module):
        self.end = time.perf_counter()


def lightning_fit(spec: dict, updates: int, device: str, warmup: int) -> tuple[float, float]:
    """One single run's ``warmup`` + ``updates`` generator updates in Lightning's fit loop -> (seconds of the whole
    fit, start-up included; seconds of the ``updates`` after the warm-up)."""
    model, dm = build(spec, device)
    total = updates + warmup
    budget = BudgetCallback(total, spec["batch_size"], every=max(1, total // 100))
    clock = _StepClock(warmup)
    trainer = pl.Trainer(accelerator=device, devices=1, logger=False, callbacks=[budget.as_lightning(), clock],
                         max_steps=total * optimizer_steps_per_update(model), max_epochs=-1, limit_val_batches=0,
                         num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=max(1, total // 100))
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    whole = time.perf_counter() - start
    if clock.batches != total:
        raise RuntimeError(f"the fit loop ran {clock.batches} batches, expected {total}")
    return whole, clock.end - clock.start


def vectorised(specs: list[dict], updates: int, device: str, warmup: int) -> float:
    """Seconds of ``updates`` vectorised updates of the seeds ``specs`` (after ``warmup`` untimed ones)."""
    models, batches, generators = [], [], []
    for spec in specs:
        model, dm = build(spec, device)
        generator = torch.Generator(device=device)
        generator.set_state(torch.get_rng_state() if device == "cpu" else torch.cuda.get_rng_state())
        models.append(model)
        batches.append(_Batches(dm))
        generators.append(generator)
    group = SeedGroup(models, generators, updates + warmup)
    for _ in range(warmup):
        group.update([next(b) for b in batches])
    start = time.perf_counter()
    for _ in range(updates):
        group.update([next(b) for b in batches])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def plain_gan(spec: dict, updates: int, device: str, warmup: int) -> float:
    """Seconds of ``updates`` GAN updates of one seed in a plain torch loop over TextGAN's own update functions."""
    model, dm = build(spec, device)
    model.train()
    g, d = model.generator_optimizer_settings(), model.d_config
    g_opt = generator_optimizer(g["class"], model.generator.named_parameters(), g["lr"], g["betas"], g["weight_decay"])
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=d.lr, betas=tuple(d.betas))
    batches = _Batches(dm)

    def step(opt, loss, params, clip):
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([x.norm() for x in grads]))
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return norm

    def update():
        batch = next(batches).to(device)
        for p in model.generator.parameters():  # as Lightning's optimizer toggle does
            p.requires_grad_(False)
        d_loss, d_real, d_fake = model.discriminator_update_loss(batch, model.draw_noise(len(batch)))
        d_norm = step(d_opt, d_loss, list(model.discriminator.parameters()), d.gradient_clip)
        for p in model.generator.parameters():
            p.requires_grad_(True)
        for p in model.discriminator.parameters():
            p.requires_grad_(False)
        g_loss, extras = model.generator_update_loss(batch, model.draw_noise(len(batch)))
        g_norm = step(g_opt, g_loss, list(model.generator.parameters()), g["gradient_clip"])
        for p in model.discriminator.parameters():
            p.requires_grad_(True)
        model.g_update_count += 1
        logged = update_log(model.game.loss, g_loss, d_loss, d_real, d_fake, g_norm, d_norm, model.g_updates, extras)
        return {k: float(v) for k, v in logged.items()}  # what the budget callback reads every update

    for _ in range(warmup):
        update()
    start = time.perf_counter()
    for _ in range(updates):
        update()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--families", default="transformer,gan-gumbel")
    parser.add_argument("--updates", type=int, default=60, help="timed generator updates per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CPU presets run 1 per worker)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    S, U = args.seeds, args.updates
    print(f"{S} seeds, {U} timed updates per run, {args.threads} torch thread(s), device {args.device}, "
          f"torch {torch.__version__}; samples/s = seeds x updates x batch size / seconds")
    print(f"{'family':<12} {'batch':>5} {'sequential':>12} {'vectorised':>12} {'ratio':>6} {'start-up':>11} "
          f"{'plain 1 seed':>13} {'Lightning/plain':>16}")
    with _quiet_lightning():
        for family in args.families.split(","):
            for B in map(int, args.batch_sizes.split(",")):
                specs = [spec_of(family, B, seed) for seed in range(S)]
                # every method times U updates after its warm-up; a single run's Lightning start-up is printed apart
                fits = [lightning_fit(s, U, args.device, args.warmup) for s in specs]
                sequential = sum(steps for _, steps in fits)
                startup = sum(whole - steps for whole, steps in fits) / len(fits)
                vec = vectorised(specs, U, args.device, args.warmup)
                seq_rate, vec_rate = S * U * B / sequential, S * U * B / vec
                line = f"{family:<12} {B:>5} {seq_rate:>10.0f}/s {vec_rate:>10.0f}/s {vec_rate / seq_rate:>5.2f}x"
                line += f" {startup:>9.2f} s"
                if family.startswith("gan"):
                    plain = plain_gan(specs[0], U, args.device, args.warmup)
                    plain_rate = U * B / plain
                    line += f" {plain_rate:>11.0f}/s {seq_rate / plain_rate:>15.2f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
