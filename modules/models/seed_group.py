"""S seeds of one configuration trained as one vectorised model, with the numbers of S single runs.

At the batch sizes of the experiments (1 to 64) and the widths of the CPU presets (32), a training update spends
most of its time on per-operation overhead, not arithmetic, so running S seeds one after another pays that
overhead S times. Here the S copies of every parameter are stacked into one (S, ...) tensor and each update runs
the family's own loss code once, under ``torch.vmap`` over the seed dimension (``torch.func.functional_call`` swaps
the stacked weights into a template copy of the module). Each seed keeps everything its single run has:

- its initialisation and data order: the caller builds seed s's model and data module exactly as the single run of
  seed s does (``experiments.core.runner``) and passes its batches;
- its noise: one ``torch.Generator`` per seed holds the RNG state the single run has when training starts; every
  update draws its random numbers from it with the family's own ``draw_noise`` (``modules.models.noise``), in the
  single run's order, before the vectorised loss runs;
- its optimiser: Adam and AdamW are elementwise, so one step of the family's optimiser over the stacked tensors is
  S single steps; gradient-norm clipping is per seed (the norm over that seed's parameters, as
  ``torch.nn.utils.clip_grad_norm_`` computes it); the learning-rate schedule, the Gumbel beta and the update count
  are shared because every live seed is at the same update;
- its generation: the Gumbel GAN's G makes the fakes of every D update and the relaxed one-hots of its own update
  in one unroll (D's updates leave G unchanged; each row keeps its update's noise), where a single run unrolls once
  per player update;
- its divergence detection: a seed whose loss turns non-finite stops there, its state is kept as it was after
  that update (what its single run ends with), and the others go on.

Only configurations whose every random number is drawn outside the networks can be vectorised exactly
(``vectorisable`` says why one cannot: dropout inside the generator, an LSTM, WGAN-GP's double backward, Monte-Carlo
rollouts, MLE pretraining inside the GAN); the caller runs those seeds one by one. The float results match the single
runs to rounding (batched matrix products sum in another order), which the tests bound.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from modules.data.batch import Batch
from modules.data.vocab import PAD_ID
from modules.models.gan_losses import update_log
from modules.models.noise import UpdateNoise
from modules.models.text_gan import TextGAN
from modules.models.transformer_seq2seq import TransformerSeq2Seq, generator_optimizer, warmup_schedule

# Counters every live seed shares (they all make the same updates): kept in the template, not stacked.
SHARED_BUFFERS = ("g_update_count", "mle_update_count")


def vectorisable(model) -> Optional[str]:
    """None when ``model``'s training updates can run vectorised over seeds with its single run's numbers, else why
    not (its seeds then run one by one)."""
    family = getattr(model, "family", None)
    if family not in ("transformer", "gan"):
        return f"the {family!r} family has no vectorised update"
    base = TransformerSeq2Seq if family == "transformer" else TextGAN
    if type(model).training_step is not base.training_step:
        return f"{type(model).__name__} has a training_step of its own (the vectorised update is {base.__name__}'s)"
    generator = model.generator
    if type(generator).__name__ != "EncoderDecoderTransformer":
        return f"its generator is a {type(generator).__name__} (only the Transformer's ops all vectorise)"
    if generator.config.dropout > 0:
        return f"the generator's dropout ({generator.config.dropout}) is drawn inside the net"
    if family == "gan":
        game = model.game
        if game.pretrain_epochs > 0:
            return "the GAN pretrains by MLE inside the run (game.pretrain_epochs > 0)"
        if game.loss == "wgan-gp":
            return "WGAN-GP's gradient penalty differentiates D twice"
        if game.estimator == "reinforce" and game.rollouts > 0:
            return "Monte-Carlo rollouts score variable numbers of completions"
        if game.estimator == "gumbel" and game.straight_through:
            return "the straight-through Gumbel estimator is not vectorised"
        try:
            model.discriminator.dropout_mask_shape(1)
        except NotImplementedError as err:
            return str(err)
    return None


def stack_batches(batches: Sequence[Batch]) -> dict[str, Tensor]:
    """S batches of equal size -> their fields stacked on a leading seed dimension, shorter rows right-padded (a
    padded position is masked, so padding changes nothing but the rounding of the sums)."""
    sizes = {len(b) for b in batches}
    if len(sizes) != 1:
        raise ValueError(f"the seeds' batches must have one size, got {sorted(sizes)}")

    def stack(tensors: list[Tensor], fill) -> Tensor:
        width = max(t.size(1) for t in tensors)
        return torch.stack([nn.functional.pad(t, (0, width - t.size(1)), value=fill) for t in tensors])

    out = {"src": stack([b.src for b in batches], PAD_ID), "tgt": stack([b.tgt for b in batches], PAD_ID),
           "src_pad_mask": stack([b.src_pad_mask for b in batches], True),
           "tgt_pad_mask": stack([b.tgt_pad_mask for b in batches], True)}
    if all(b.label is not None for b in batches):
        out["label"] = torch.stack([b.label for b in batches])
    return out


def _aliases(module: nn.Module) -> dict[str, str]:
    """Alias name -> the name ``named_parameters()`` lists, for every parameter reachable under two names."""
    first: dict[int, str] = {}
    out = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in first:
            out[name] = first[id(param)]
        else:
            first[id(param)] = name
    return out


def _tensor_extras(loss: Tensor, extras: dict) -> tuple[Tensor, dict[str, Tensor]]:
    """A G loss and its logged extras as ``torch.vmap`` can return them: the extras that are tensors (a Python
    number, such as the shared Gumbel beta, is logged apart)."""
    return loss, {k: v for k, v in extras.items() if isinstance(v, Tensor)}


class _Apply(nn.Module):
    """The template as a child, so that ``functional_call`` can swap its weights for one seed's and run ``fn``."""

    def __init__(self, template: nn.Module):
        super().__init__()
        self.m = template
        self.fn: Optional[Callable] = None

    def forward(self, batch: dict, noise: dict, extra: dict):
        return self.fn(self.m, Batch(**batch), UpdateNoise.from_dict(noise), **extra)


class _Player:
    """One network that an update trains: its stacked parameters, optimiser, schedule and clipping."""

    def __init__(self, names: list[str], params: dict[str, Tensor], optimizer, schedule, clip: float,
                 frozen: bool = False):
        self.names, self.tensors = names, [params[n] for n in names]
        self.optimizer, self.clip, self.frozen = optimizer, clip, frozen
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def step(self, loss: Tensor) -> Tensor:
        """Backward of the summed per-seed losses, per-seed gradient norm (before clipping), per-seed clipping,
        one optimiser step. -> (S,) the norms."""
        grads = torch.autograd.grad(loss.sum(), self.tensors, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(self.tensors, grads)]
        per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], dim=1)  # (S, P)
        norms = torch.linalg.vector_norm(per_tensor, dim=1)  # (S,)
        if self.frozen:  # the null GAN's D: its gradient is measured, never applied
            return norms
        if self.clip > 0:  # clip_grad_norm_'s rule, per seed
            coef = (self.clip / (norms + 1e-6)).clamp(max=1.0)  # (S,)
            grads = [g * coef.view(-1, *([1] * (g.dim() - 1))) for g in grads]
        for t, g in zip(self.tensors, grads):
            t.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return norms


class SeedGroup:
    """S models of one configuration (built, set up on their data and evaluated as their single runs are), trained
    together: ``update(batches)`` makes one training update of every seed and returns each seed's logged values
    (the names its single run logs); ``write_back()`` puts each seed's weights, buffers and counters back into its
    model. ``generators[s]`` holds the RNG state seed s's single run has when its training starts."""

    def __init__(self, models: Sequence[nn.Module], generators: Sequence[torch.Generator], planned_updates: int):
        reasons = {vectorisable(m) for m in models}
        if reasons != {None}:
            raise ValueError(f"these models cannot be vectorised: {'; '.join(r for r in reasons if r)}")
        self.models, self.generators = list(models), list(generators)
        self.size = len(self.models)
        first = self.models[0]
        self.template = copy.deepcopy(first, memo={id(first._trainer): None} if first._trainer is not None else {})
        self.template.train()
        for module in self.template.modules():
            if hasattr(module, "explicit"):  # the Transformer's attention: torch.vmap cannot batch the fused kernel
                module.explicit = True
        self.apply = _Apply(self.template)
        named = [dict(m.named_parameters()) for m in self.models]
        buffers = [dict(m.named_buffers()) for m in self.models]
        self.params = {n: torch.stack([p[n].detach() for p in named]).requires_grad_(True) for n in named[0]}
        self.buffers = {n: torch.stack([b[n] for b in buffers]) for n in buffers[0]
                        if n.rsplit(".", 1)[-1] not in SHARED_BUFFERS}
        # every name a tied parameter goes by (the Transformer ties its embeddings and output projection), so that
        # functional_call swaps each alias for the stacked tensor itself (its own tie handling leaves an alias pointing
        # at a vmapped tensor after the call)
        self.aliases = {alias: name for alias, name in _aliases(self.template).items() if name in self.params}
        self.live = [True] * self.size
        self.stopped_at: dict[int, int] = {}  # seed -> the update after which it was stopped (``stop``)
        self.updates = 0
        self.family = first.family
        self.players = self._players(planned_updates)

    # ---- construction ---------------------------------------------------------------------------------------
    def _names(self, prefix: str) -> list[str]:
        return [n for n in self.params if n.startswith(prefix)]

    def _players(self, planned: int) -> dict[str, _Player]:
        m = self.template
        if self.family == "transformer":
            hp = m.hparams
            names = self._names("generator.")
            opt = generator_optimizer(hp.optimizer, [(n, self.params[n]) for n in names], hp.lr, hp.betas,
                                      hp.weight_decay, stacked=1)
            schedule = warmup_schedule(hp.warmup_steps, planned, hp.schedule)
            return {"generator": _Player(names, self.params, opt, schedule, hp.gradient_clip)}
        g, game, d = m.generator_optimizer_settings(), m.game, m.d_config
        total = m._adversarial_updates_planned()
        g_names, d_names = self._names("generator."), self._names("discriminator.")
        g_opt = generator_optimizer(g["class"], [(n, self.params[n]) for n in g_names], g["lr"], g["betas"],
                                    g["weight_decay"], stacked=1)
        d_opt = torch.optim.Adam([self.params[n] for n in d_names], lr=d.lr, betas=tuple(d.betas))
        return {"discriminator": _Player(d_names, self.params, d_opt,
                                         warmup_schedule(game.warmup_steps, total * game.d_steps, game.lr_schedule),
                                         d.gradient_clip, frozen=d.frozen),
                "generator": _Player(g_names, self.params, g_opt,
                                     warmup_schedule(game.warmup_steps, total, game.lr_schedule), g["gradient_clip"])}

    # ---- one update -----------------------------------------------------------------------------------------
    def _noise(self, batch_size: int) -> dict[str, Tensor]:
        """Each seed's noise for one player update, drawn from its own generator in its single run's order."""
        draws = [self.template.draw_noise(batch_size, gen).as_dict() for gen in self.generators]
        return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}

    def _vmap(self, fn: Callable, batch: dict[str, Tensor], noise: dict[str, Tensor],
              extra: Optional[dict[str, Tensor]] = None):
        """``fn(model, batch, noise, **extra)`` for every seed at once, with its own weights, buffers, batch, noise
        and ``extra`` tensors (each (S, ...))."""
        self.apply.fn = fn
        params = {"m." + n: t for n, t in self.params.items()}
        params.update({"m." + alias: self.params[name] for alias, name in self.aliases.items()})
        buffers = {"m." + n: t for n, t in self.buffers.items()}

        def one_seed(p, b, batch_s, noise_s, extra_s):
            return functional_call(self.apply, (p, b), (batch_s, noise_s, extra_s), tie_weights=False, strict=False)

        return torch.vmap(one_seed)(params, buffers, batch, noise, extra or {})

    def update(self, batches: Sequence[Batch]) -> list[dict[str, float]]:
        """One training update of every seed on its batch -> per seed, the values its single run logs (a stopped
        seed's entry is meaningless: its slice trains on a live seed's copy)."""
        batch = {k: v.to(self.template.device) for k, v in stack_batches(batches).items()}
        B = len(batches[0])
        logs = self._mle_update(batch, B) if self.family == "transformer" else self._gan_update(batch, B)
        self.updates += 1
        return logs

    @torch.no_grad()
    def stop(self, seed: int) -> None:
        """Stop ``seed`` (its loss turned non-finite): its model gets its state as it is now, the state its single
        run stops with; its slice then continues as a copy of a live seed's, so that no NaN reaches an operation
        that would fail on it (sampling from NaN probabilities)."""
        self.write_back(seed)
        self.live[seed] = False
        self.stopped_at[seed] = self.updates
        donor = next((s for s in range(self.size) if self.live[s]), None)
        if donor is None:
            return
        for t in (*self.params.values(), *self.buffers.values()):
            t[seed] = t[donor]
        for player in self.players.values():
            for state in player.optimizer.state.values():
                for v in state.values():
                    if isinstance(v, Tensor) and v.dim() > 0 and v.size(0) == self.size:
                        v[seed] = v[donor]

    def _mle_update(self, batch: dict, B: int) -> list[dict[str, float]]:
        loss = self._vmap(lambda m, b, n: m.training_loss(b, n), batch, self._noise(B))  # (S,)
        norms = self.players["generator"].step(loss)
        loss = loss.detach()
        logs = []
        for s in range(self.size):
            row = {"train/loss": float(loss[s]), "train/mle_loss": float(loss[s])}
            if self.template.hparams.gradient_clip > 0:
                row["train/grad_norm"] = float(norms[s])
            logs.append(row)
        return logs

    def _gan_update(self, batch: dict, B: int) -> list[dict[str, float]]:
        m = self.template
        if m.game.estimator == "gumbel":
            return self._gumbel_update(batch, B)
        for _ in range(m.game.d_steps):
            d_loss, d_real, d_fake = self._vmap(lambda gan, b, n: gan.discriminator_update_loss(b, n), batch,
                                                self._noise(B))
            d_norm = self.players["discriminator"].step(d_loss)
        g_loss, extras = self._vmap(lambda gan, b, n: _tensor_extras(*gan.generator_update_loss(b, n)), batch,
                                    self._noise(B))
        return self._generator_step_and_logs(d_loss, d_real, d_fake, d_norm, g_loss, extras, None)

    def _gumbel_update(self, batch: dict, B: int) -> list[dict[str, float]]:
        """The Gumbel GAN's update with one unroll of G for all its player updates. D's updates do not change G, so
        the fakes of each D update and the relaxed one-hots of G's update come from the same weights: one unroll of
        (d_steps + 1) x B rows, each row with its own update's noise (drawn in the single run's order: every D
        update's, then G's), computes them all at once; a row's numbers do not depend on the rows beside it. Each
        player update then gets its rows as ``fakes`` (D's detached, as the single run's no-grad fakes; G's with
        gradients, scored by D as D's updates left it)."""
        m = self.template
        updates, L = m.game.d_steps + 1, m.generation_lengths()[1]
        noises = [self._noise(B) for _ in range(updates)]  # each name -> (S, ...); the single run's order of draws
        rows = {name: torch.cat([t] * updates, dim=1) for name, t in batch.items()}  # (S, k B, ...)
        unroll_noise = {"tokens": torch.cat([n["tokens"] for n in noises], dim=2)}  # (S, L, k B, V)
        if "z" in noises[0]:
            unroll_noise["z"] = torch.cat([n["z"] for n in noises], dim=1)  # (S, k B, z)
        onehots, pads = self._vmap(lambda gan, b, n: gan.estimator.fakes(gan, b, L, noise=n), rows, unroll_noise)
        fakes = [{"fake": onehots[:, u * B:(u + 1) * B], "fake_pad": pads[:, u * B:(u + 1) * B]}
                 for u in range(updates)]  # (S, B, L, V), (S, B, L) per player update
        for step in range(updates - 1):
            d_loss, d_real, d_fake = self._vmap(lambda gan, b, n, fake, fake_pad: gan.discriminator_update_loss(
                b, n, (fake, fake_pad)), batch, noises[step], fakes[step])
            d_norm = self.players["discriminator"].step(d_loss)
        g_loss, extras = self._vmap(lambda gan, b, n, fake, fake_pad: _tensor_extras(*gan.generator_update_loss(
            b, n, (fake, fake_pad))), batch, noises[-1], fakes[-1])
        return self._generator_step_and_logs(d_loss, d_real, d_fake, d_norm, g_loss, extras, m.temperature)

    def _generator_step_and_logs(self, d_loss, d_real, d_fake, d_norm, g_loss, extras,
                                 beta) -> list[dict[str, float]]:
        """G's step, then each seed's logged values (its single run's names); ``beta``: the Gumbel temperature."""
        m = self.template
        g_norm = self.players["generator"].step(g_loss)
        m.g_update_count += 1
        logs = []
        for s in range(self.size):
            seed_extras = {k: v[s] for k, v in extras.items()}
            if beta is not None:
                seed_extras["train/gumbel_temperature"] = beta
            values = update_log(m.game.loss, g_loss[s], d_loss[s], d_real[s], d_fake[s], g_norm[s], d_norm[s],
                                int(m.g_update_count), seed_extras)
            logs.append({k: float(v) for k, v in values.items()})
        return logs

    # ---- back to the models ---------------------------------------------------------------------------------
    @torch.no_grad()
    def write_back(self, seed: Optional[int] = None) -> None:
        """Seed ``seed``'s (default: every live seed's) weights, buffers and counters into its model."""
        seeds = [s for s in range(self.size) if self.live[s]] if seed is None else [seed]
        for s in seeds:
            model = self.models[s]
            params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
            for n, t in self.params.items():
                params[n].copy_(t[s])
            for n, t in self.buffers.items():
                buffers[n].copy_(t[s])
            for n, b in self.template.named_buffers():
                if n.rsplit(".", 1)[-1] in SHARED_BUFFERS:
                    buffers[n].copy_(b)
