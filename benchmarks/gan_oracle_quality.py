"""
Benchmark: text-GAN quality on the standard SeqGAN/Texygen oracle (vocab 5000, length 20), CPU-sized.

One LSTM generator (embedding/hidden 32) is MLE-pretrained, then two copies of it are trained adversarially:
- Gumbel: RelGAN-style Gumbel-softmax relaxation, CNN discriminator, relativistic loss, beta annealed 1 -> max;
- REINFORCE: per-token LSTM discriminator (dense rewards), discounted returns minus a moving-average baseline.

Each is evaluated with the package's own test loop (GeneratorModule), at sampling temperature 1:
- NLL_oracle per token of generated samples (quality; lower is better),
- NLL_test per token of the 10,000 held-out oracle sequences under the model (coverage; lower is better),
- Self-BLEU-3/5 among samples (diversity; higher = less diverse) and BLEU-3 against the test set.
The oracle's own NLL of its test data is printed as the floor.

Literature (full budgets, GPU): MLE about 9.0 NLL_oracle; RelGAN about 6.7 (at a cost in diversity).
The budgets here are whatever a CPU allows (defaults: about 13 minutes on a busy 2-core machine), so read
the numbers as this run's, not as the papers'. The adversarial learning rates (1e-3, RelGAN: 1e-4) are
raised to make a few hundred generator updates count.
Nothing is written to the repository: checkpoints and logs go to a temporary folder that is deleted.

    python benchmarks/gan_oracle_quality.py [--pretrain-epochs 15] [--adv-updates 500] [--g-lr 1e-3] [--threads 1]
"""

import argparse
import tempfile
import time

import pytorch_lightning as pl
import torch

from experiments.core.families import merge_args
from modules.data import OracleDataModule
from modules.models import TextGAN

# TextGAN's sections (modules.models.configs), merged per variant
GENERATOR = dict(arch="lstm", emb_dim=32, hidden_dim=32)
GUMBEL = dict(discriminator=dict(arch="cnn", emb_dim=64, filter_sizes=(2, 3, 4, 5), num_filters=64, dropout=0.25),
              game=dict(loss="rsgan", estimator="gumbel", temperature_schedule="exp"))
REINFORCE = dict(discriminator=dict(arch="lstm", emb_dim=64, hidden_dim=64, dropout=0.1),
                 game=dict(loss="standard", estimator="reinforce", discount=0.95, baseline_horizon_samples=640.0))


def trainer(root, **kw):
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      default_root_dir=root, **kw)


def evaluate(model, dm, root) -> dict:
    out = trainer(root).test(model, dm, verbose=False)[0]
    return {k.removeprefix("test/"): float(v) for k, v in out.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--pretrain-lr", type=float, default=1e-2)
    p.add_argument("--adv-updates", type=int, default=500, help="adversarial generator updates per GAN")
    p.add_argument("--gumbel-max-temperature", type=float, default=100.0)
    p.add_argument("--g-lr", type=float, default=1e-3)
    p.add_argument("--d-lr", type=float, default=1e-3)
    p.add_argument("--d-steps", type=int, default=1)
    p.add_argument("--reinforce-g-lr", type=float, default=None, help="default: --g-lr")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", nargs="*", default=[], choices=["gumbel", "reinforce"])
    p.add_argument("--save-pretrained", default=None, help="write the pretrained generator's weights here")
    p.add_argument("--load-pretrained", default=None, help="start from these weights instead of pretraining")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    dm = OracleDataModule(preset="standard", batch_size=args.batch_size)
    dm.prepare()
    test_tgt = torch.tensor([ex.tgt for ex in dm.examples("test")])
    floor = -dm.oracle_log_prob(test_tgt).mean().item() / dm.seq_len
    common = dict(generator=dict(**GENERATOR, lr=args.g_lr), discriminator=dict(lr=args.d_lr),
                  game=dict(d_steps=args.d_steps, pretrain_lr=args.pretrain_lr),
                  evaluation=dict(num_eval_samples=args.eval_samples, eval_batch_size=500))
    results, times = {}, {}
    with tempfile.TemporaryDirectory() as root:
        pl.seed_everything(args.seed, verbose=False)
        start = time.perf_counter()
        mle = TextGAN(dm.vocab_size, **merge_args(common, {**GUMBEL, "game": {**GUMBEL["game"],
                                                                       "pretrain_epochs": args.pretrain_epochs}}))
        if args.load_pretrained:
            mle.generator.load_state_dict(torch.load(args.load_pretrained, weights_only=True))
            trainer(root, max_epochs=0).fit(mle, dm)  # attaches the vocabulary, trains nothing
        else:
            trainer(root, max_epochs=args.pretrain_epochs).fit(mle, dm)
        if args.save_pretrained:
            torch.save(mle.generator.state_dict(), args.save_pretrained)
        times["MLE (pretrained)"] = time.perf_counter() - start
        results["MLE (pretrained)"] = evaluate(mle, dm, root)
        print(f"pretraining: {times['MLE (pretrained)']:.0f} s, {mle.mle_updates} updates", flush=True)

        variants = {
            "Gumbel GAN": merge_args(GUMBEL, {"game": dict(max_temperature=args.gumbel_max_temperature,
                                                           anneal_steps=args.adv_updates)}),
            "REINFORCE GAN": merge_args(REINFORCE, {"generator": {"lr": args.reinforce_g_lr or args.g_lr}}),
        }
        for name, kw in variants.items():
            if name.split()[0].lower() in args.skip:
                continue
            pl.seed_everything(args.seed, verbose=False)
            kw = merge_args(merge_args(common, kw), {"game": dict(pretrain_epochs=0, max_g_updates=args.adv_updates)})
            gan = TextGAN(dm.vocab_size, **kw)
            gan.generator.load_state_dict(mle.generator.state_dict())  # the same MLE starting point for both
            start = time.perf_counter()
            trainer(root, max_epochs=10_000).fit(gan, dm)
            times[name] = time.perf_counter() - start
            results[name] = evaluate(gan, dm, root)
            print(f"{name}: {times[name]:.0f} s, {gan.g_updates} generator updates", flush=True)

    print()
    mle_budget = f"pretrained weights {args.load_pretrained}" if args.load_pretrained else f"{args.pretrain_epochs} MLE epochs"
    print(f"standard oracle, {args.eval_samples} samples at temperature 1; budgets: {mle_budget}, "
          f"{args.adv_updates} adversarial G updates (d_steps {args.d_steps}, batch {args.batch_size})")
    print(f"oracle's own test data: NLL_oracle {floor:.3f} per token")
    header = f"{'model':<18} {'NLL_oracle':>10} {'NLL_test':>9} {'SelfBLEU3':>9} {'SelfBLEU5':>9} {'BLEU3':>6} " \
             f"{'unique':>6} {'time s':>7}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<18} {r['nll_oracle_per_token']:>10.3f} {r['nll_test_per_token']:>9.3f} "
              f"{r['self_bleu3']:>9.3f} {r['self_bleu5']:>9.3f} {r['bleu3']:>6.3f} {r['unique_fraction']:>6.3f} "
              f"{times[name]:>7.0f}")
    mle_r = results["MLE (pretrained)"]
    if "Gumbel GAN" in results:
        g = results["Gumbel GAN"]
        print(f"\nGumbel GAN vs its MLE start: NLL_oracle {g['nll_oracle_per_token'] - mle_r['nll_oracle_per_token']:+.3f}, "
              f"NLL_test {g['nll_test_per_token'] - mle_r['nll_test_per_token']:+.3f}, "
              f"Self-BLEU-3 {g['self_bleu3'] - mle_r['self_bleu3']:+.3f}")


if __name__ == "__main__":
    main()
