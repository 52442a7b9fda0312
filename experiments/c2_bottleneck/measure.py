"""C2's measurements of a trained model: token accuracy on the task (overall and per source length), the oracle's
NLL, and corpus BLEU per source-length bucket on Multi30k."""

from __future__ import annotations

import math
from typing import Sequence


def bucket_of(length: int, bounds: Sequence[int]) -> str:
    """The name of the bucket of a source length: ``<=10``, ``11-15``, ..., ``>20`` for bounds (10, 15, 20)."""
    lower = 1
    for bound in bounds:
        if length <= bound:
            return f"<={bound}" if lower == 1 else f"{lower}-{bound}"
        lower = bound + 1
    return f">{bounds[-1]}" if bounds else "all"


def bucket_names(bounds: Sequence[int]) -> list[str]:
    return [bucket_of(b, bounds) for b in bounds] + ([f">{bounds[-1]}"] if bounds else ["all"])


def _nll_per_example(model, examples, batch_size: int = 256):
    """Teacher-forced log p(target | source) per example under the model's sampling distribution (the shared
    ``GeneratorModule.score_batch``) -> (summed NLL (N,), scored tokens (N,))."""
    import torch

    from modules.data.batch import collate

    nll, tokens = [], []
    with torch.no_grad(), model.generator_in_eval_mode():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start:start + batch_size]).to(model.device)
            log_p, count = model.score_batch(batch, start // batch_size)
            nll.append(-log_p.double())
            tokens.append(count)
    return torch.cat(nll), torch.cat(tokens)


def _greedy_translations(model, examples, batch_size: int = 256) -> list[list[int]]:
    from modules.data.batch import pad_sequences
    from modules.data.vocab import PAD_ID

    out = []
    for start in range(0, len(examples), batch_size):
        src = pad_sequences([ex.src for ex in examples[start:start + batch_size]])
        samples = model.sample(src, src.eq(PAD_ID), greedy=True)
        out += model.decode_samples(samples.tokens, samples.lengths)
    return out


def measure_task(model, dm) -> dict:
    from modules.data.tasks import greedy_task_scores

    scores = greedy_task_scores(model, dm, "test")
    nll, tokens = _nll_per_example(model, dm.examples("test"))
    return {"exact_match": float(scores.exact_match.mean()), "token_accuracy": float(scores.token_accuracy.mean()),
            "chance_token_accuracy": 1.0 / dm.num_words, "nll_test_per_token": float(nll.sum() / tokens.sum()),
            "num_test": int(scores.exact_match.numel())}


def length_test_sets(data: dict, dm, lengths: Sequence[int], batch_size: int, seed: int) -> dict[int, object]:
    """Per length L, a data module whose test split holds sources of exactly L words, none of them in ``dm``'s
    training or validation split: the same settings and ``task_seed`` draw the same training and validation
    examples first, and the test sources are then drawn unique against them."""
    from experiments.core.datamodules import build_datamodule

    out = {}
    for length in lengths:
        spec = {**data, "init_args": {**data["init_args"], "test_min_len": int(length), "test_max_len": int(length)}}
        at = build_datamodule(spec, batch_size, seed)
        at.prepare()
        if at.examples("train") != dm.examples("train") or at.examples("val") != dm.examples("val"):
            raise RuntimeError(f"the test set of length {length} was not drawn after the run's own training data: "
                               "its sources could be in the training split")
        out[int(length)] = at
    return out


def measure_task_by_length(model, data: dict, dm, lengths: Sequence[int], batch_size: int, seed: int) -> dict:
    """``by_length``: the reverse scores (``measure_task``) of each length's test set, and their mean over the
    lengths."""
    by_length = {str(n): measure_task(model, at)
                 for n, at in length_test_sets(data, dm, lengths, batch_size, seed).items()}
    mean = lambda k: sum(b[k] for b in by_length.values()) / len(by_length)  # noqa: E731
    return {"by_length": by_length, "lengths": [int(n) for n in lengths], "token_accuracy": mean("token_accuracy"),
            "exact_match": mean("exact_match"), "chance_token_accuracy": 1.0 / dm.num_words,
            "num_test": sum(b["num_test"] for b in by_length.values())}


def measure_oracle(model, dm, trainer, measure: dict) -> dict:
    model.evaluation.num_eval_samples = int(measure["oracle_eval_samples"])
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    metrics = {k.split("/", 1)[1]: float(v) for k, v in result.items() if k.startswith("test/")}
    entropy, entropy_se = dm.entropy_per_token(num_samples=int(measure["oracle_entropy_samples"]))
    out = {"nll_test_per_token": metrics["nll_test_per_token"],
           "nll_oracle_per_token": metrics.get("nll_oracle_per_token", math.nan),
           "oracle_entropy_per_token": entropy, "oracle_entropy_se": entropy_se,
           "excess_nll_per_token": metrics["nll_test_per_token"] - entropy, "num_test": len(dm.examples("test"))}
    return out


def measure_translation(model, dm, measure: dict) -> dict:
    """Per source-length bucket of the test split: NLL_test per token and corpus BLEU-4 of greedy translations."""
    from modules.metrics.bleu import corpus_bleu

    examples = dm.examples("test")[:measure.get("max_test")]
    bounds = measure["buckets"]
    nll, tokens = _nll_per_example(model, examples)
    hypotheses = _greedy_translations(model, examples)
    words = lambda ids: model.to_text(ids).split()  # noqa: E731
    buckets = {}
    for name in bucket_names(bounds):
        index = [i for i, ex in enumerate(examples) if bucket_of(len(ex.src), bounds) == name]
        if not index:
            buckets[name] = {"num_test": 0, "nll_test_per_token": math.nan, "bleu4": math.nan}
            continue
        bleu = corpus_bleu([words(hypotheses[i]) for i in index], [words(examples[i].tgt) for i in index])
        buckets[name] = {"num_test": len(index), "nll_test_per_token": float(nll[index].sum() / tokens[index].sum()),
                         "bleu4": bleu}
    all_bleu = corpus_bleu([words(h) for h in hypotheses], [words(ex.tgt) for ex in examples])
    return {"nll_test_per_token": float(nll.sum() / tokens.sum()), "bleu4": all_bleu, "num_test": len(examples),
            "buckets": buckets, "bucket_names": list(buckets)}  # (the table stores dicts with sorted keys)
