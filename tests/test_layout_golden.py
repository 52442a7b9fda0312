"""The smoke presets compute what they computed before experiments/ was rearranged into sub-packages (issue 22).

tests/data/smoke_golden.json holds the result rows, verdicts and pre-registration hashes of ``gvt sweep all --preset
smoke`` and ``gvt lecture --preset lecture-smoke`` as the flat layout computed them (timings and paths left out; see
tests/make_smoke_golden.py, which also regenerates the file: ``PYTHONPATH=. python tests/make_smoke_golden.py``).
This test reruns both presets and compares: the same rows, the same keys in each, strings and booleans equal,
numbers equal to a relative tolerance of 1e-6 (absolute 1e-12 near zero). A difference is named by row and field.
"""

import json
import math

import pytest

from make_smoke_golden import GOLDEN, collect, run_presets

REL, ABS = 1e-6, 1e-12


def differences(expected, actual, where: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        if set(expected) != set(actual):
            found.append(f"{where or '/'}: keys missing {sorted(set(expected) - set(actual))}, "
                         f"new {sorted(set(actual) - set(expected))}")
        for key in sorted(set(expected) & set(actual)):
            found += differences(expected[key], actual[key], f"{where}/{key}")
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} items expected, {len(actual)} found"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{where}[{i}]")]
    numbers = (int, float)
    if (isinstance(expected, numbers) and isinstance(actual, numbers) and not isinstance(expected, bool)
            and not isinstance(actual, bool)):
        if math.isclose(expected, actual, rel_tol=REL, abs_tol=ABS):
            return []
        return [f"{where}: {expected!r} expected, {actual!r} found"]
    return [] if expected == actual else [f"{where}: {expected!r} expected, {actual!r} found"]


def test_differences_names_the_row_and_field():
    golden = {"rows": {"sweep": {"k1": {"final": {"bleu2": 0.5}, "family": "rnn"}}}}
    assert differences(golden, golden) == []
    close = {"rows": {"sweep": {"k1": {"final": {"bleu2": 0.5 * (1 + 1e-9)}, "family": "rnn"}}}}
    assert differences(golden, close) == []
    changed = {"rows": {"sweep": {"k1": {"final": {"bleu2": 0.51}, "family": "rnn"}}}}
    assert differences(golden, changed) == ["/rows/sweep/k1/final/bleu2: 0.5 expected, 0.51 found"]
    assert "keys missing ['family']" in differences(golden, {"rows": {"sweep": {"k1": {"final": {"bleu2": 0.5}}}}})[0]


@pytest.mark.slow
def test_the_smoke_presets_compute_the_golden_numbers(tmp_path):
    run_presets(tmp_path / "out", tmp_path / "cache")
    found = differences(json.loads(GOLDEN.read_text()), collect(tmp_path / "out"))
    assert not found, f"{len(found)} differences from {GOLDEN.name}:\n" + "\n".join(found[:40])
