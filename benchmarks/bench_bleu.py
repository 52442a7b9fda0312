"""Benchmark: fast Texygen BLEU / Self-BLEU (modules.metrics) against the NLTK loop it reproduces.

    python benchmarks/bench_bleu.py [--quick] [--nltk-subset N] [--seed S]

(a) BLEU-2..5 of 1,000 hypotheses against 10,000 references, (b) Self-BLEU-2..5 of 2,000 samples, on synthetic
Zipf-distributed token ids (vocabulary 5,000, lengths 15..25, fixed seed). The NLTK loop is far too slow to run
in full, so it is timed on the first N hypotheses (each still against ALL references) and scaled linearly to
the full set; the per-hypothesis values on that subset are compared with ours. The NLTK baseline is its
fastest use: one sentence_bleu call per hypothesis with the four weight tuples together (Texygen calls it
once per order, about 3x slower still). Ours is timed end to end, reference indexing included.
(c) If $GVT_DATA_DIR/coco/test.txt exists (the corpora folder; default ../shared/data next to the project root),
    200 real captions are checked too.
Exits non-zero if any value differs from NLTK by more than 1e-9.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu  # noqa: E402

from modules.metrics import ReferenceIndex, self_bleu_scores  # noqa: E402

ORDERS = (2, 3, 4, 5)
WEIGHTS = [tuple(1.0 / n for _ in range(n)) for n in ORDERS]
SMOOTHING = SmoothingFunction().method1
TOLERANCE = 1e-9


def synthetic_corpus(rng: np.random.Generator, count: int, vocab: int = 5000) -> list[list[int]]:
    # Zipf-like unigram frequencies, as in text, so that n-grams actually repeat across sentences.
    probs = 1.0 / np.arange(1, vocab + 1)
    probs /= probs.sum()
    lengths = rng.integers(15, 26, size=count)
    return [rng.choice(vocab, size=int(length), p=probs).tolist() for length in lengths]


def nltk_scores(hypotheses, references_for) -> np.ndarray:
    """(len(hypotheses), len(ORDERS)) NLTK scores; references_for(i) gives hypothesis i's references."""
    return np.array([sentence_bleu(references_for(i), h, WEIGHTS, smoothing_function=SMOOTHING)
                     for i, h in enumerate(hypotheses)])


def timed(fn, repeats: int = 1):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def report(name: str, ours_s: float, nltk_subset_s: float, subset: int, total: int, max_diff: float) -> bool:
    nltk_full_s = nltk_subset_s * total / subset
    speedup = nltk_full_s / ours_s
    ok = max_diff <= TOLERANCE
    print(f"{name}\n"
          f"  NLTK  : {nltk_subset_s:8.2f} s on {subset} of {total} hypotheses"
          f" -> {nltk_full_s:8.1f} s estimated for all (linear scaling)\n"
          f"  ours  : {ours_s:8.3f} s for all {total}\n"
          f"  speedup {speedup:,.0f}x (target >= 20x: {'met' if speedup >= 20 else 'MISSED'}); "
          f"max |ours - NLTK| on the subset = {max_diff:.1e} ({'ok' if ok else 'MISMATCH'})")
    return ok


def bench_bleu(rng, subset: int) -> bool:
    references = synthetic_corpus(rng, 10_000)
    hypotheses = synthetic_corpus(rng, 1_000)

    def ours():
        return ReferenceIndex(references, max_n=max(ORDERS)).sentence_bleu(hypotheses)[:, [n - 1 for n in ORDERS]]

    ours_s, scores = timed(ours, repeats=3)
    nltk_s, expected = timed(lambda: nltk_scores(hypotheses[:subset], lambda i: references))
    diff = float(np.abs(scores[:subset] - expected).max())
    print(f"  BLEU-2..5 means (ours, all 1000): {np.round(scores.mean(0), 4).tolist()}")
    return report("(a) BLEU-2..5, 1,000 hypotheses vs 10,000 references", ours_s, nltk_s, subset, 1_000, diff)


def bench_self_bleu(rng, subset: int) -> bool:
    samples = synthetic_corpus(rng, 2_000)
    ours_s, scores = timed(lambda: self_bleu_scores(samples, max_n=max(ORDERS))[:, [n - 1 for n in ORDERS]],
                           repeats=3)
    nltk_s, expected = timed(lambda: nltk_scores(samples[:subset], lambda i: samples[:i] + samples[i + 1:]))
    diff = float(np.abs(scores[:subset] - expected).max())
    print(f"  Self-BLEU-2..5 means (ours, all 2000): {np.round(scores.mean(0), 4).tolist()}")
    return report("(b) Self-BLEU-2..5 (leave-one-out), 2,000 samples", ours_s, nltk_s, subset, 2_000, diff)


def check_coco(lines: int = 200) -> bool:
    from modules.data.corpora import data_dir

    path = data_dir() / "coco" / "test.txt"
    if not path.exists():
        print(f"(c) real text: {path} not found, skipped")
        return True
    with path.open(encoding="utf-8") as f:
        words = [line.lower().split() for _, line in zip(range(lines), f)]
    vocab: dict[str, int] = {}
    sentences = [[vocab.setdefault(w, len(vocab)) for w in sentence] for sentence in words]
    half = len(sentences) // 2
    hyps, refs = sentences[:half], sentences[half:]

    diffs = [np.abs(ReferenceIndex(refs, 5).sentence_bleu(hyps)[:, [n - 1 for n in ORDERS]]
                    - nltk_scores(hyps, lambda i: refs)).max()]
    for include_self in (False, True):
        ours = self_bleu_scores(sentences, max_n=5, include_self=include_self)[:, [n - 1 for n in ORDERS]]
        others = (lambda i: sentences) if include_self else (lambda i: sentences[:i] + sentences[i + 1:])
        diffs.append(np.abs(ours - nltk_scores(sentences, others)).max())
    worst = float(max(diffs))
    ok = worst <= TOLERANCE
    print(f"(c) real text, {len(sentences)} COCO captions ({half} hyps vs {half} refs; Self-BLEU with and without"
          f" self): max |ours - NLTK| = {worst:.1e} ({'ok' if ok else 'MISMATCH'})")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="time NLTK on 10 hypotheses instead of 100")
    parser.add_argument("--nltk-subset", type=int, default=None, help="hypotheses NLTK is timed on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    subset = args.nltk_subset or (10 if args.quick else 100)

    rng = np.random.default_rng(args.seed)
    ok = bench_bleu(rng, subset)
    ok &= bench_self_bleu(rng, subset)
    ok &= check_coco()
    if not ok:
        sys.exit("values differ from NLTK")


if __name__ == "__main__":
    main()
