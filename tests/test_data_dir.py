"""The corpora folder is a setting: $GVT_DATA_DIR, default ../shared/data next to the working directory's project
root (the nearest parent with a pyproject.toml), else next to the installed package's project root."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modules.data import corpora
from modules.data.corpora import data_dir, expand_path, project_root, read_lines
from modules.data.errors import DataError
from modules.data.text_datamodule import TextDataModule

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_is_shared_data_next_to_the_project_root(monkeypatch):
    monkeypatch.delenv("GVT_DATA_DIR", raising=False)
    monkeypatch.chdir(ROOT)
    assert data_dir() == (ROOT / ".." / "shared" / "data").resolve()
    assert expand_path("$GVT_DATA_DIR/coco/train.txt") == f"{data_dir()}/coco/train.txt"


def a_project(base: Path, with_data: bool = True) -> Path:
    """base/proj (with a pyproject.toml and a subfolder), and base/shared/data where ``with_data``."""
    (base / "proj" / "sub" / "deeper").mkdir(parents=True)
    (base / "proj" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    if with_data:
        (base / "shared" / "data").mkdir(parents=True)
    return base / "proj"


def test_the_default_follows_the_working_directory_not_the_installed_package(tmp_path, monkeypatch):
    """An editable install of another checkout (the package's files elsewhere) still finds the data of the project
    the command runs in, from any folder inside it."""
    monkeypatch.delenv("GVT_DATA_DIR", raising=False)
    proj = a_project(tmp_path)
    monkeypatch.chdir(proj / "sub" / "deeper")
    assert data_dir() == (tmp_path / "shared" / "data").resolve()
    assert project_root() == proj.resolve()


def test_a_working_directory_without_a_project_looks_beside_itself(tmp_path, monkeypatch):
    monkeypatch.delenv("GVT_DATA_DIR", raising=False)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert project_root() == (tmp_path / "a" / "b").resolve()  # no pyproject.toml above: the folder itself
    assert data_dir() == (tmp_path / "a" / "shared" / "data").resolve()


def test_without_data_at_the_working_directory_the_package_root_is_the_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv("GVT_DATA_DIR", raising=False)
    proj = a_project(tmp_path, with_data=False)
    fallback = tmp_path / "pkg" / "shared" / "data"
    fallback.mkdir(parents=True)
    monkeypatch.setattr(corpora, "_PACKAGE_ROOT", tmp_path / "pkg" / "root")
    monkeypatch.chdir(proj)
    assert data_dir() == fallback.resolve()
    fallback.rmdir()  # neither there: the first place is named, so an error says where the data were expected
    assert data_dir() == (tmp_path / "shared" / "data").resolve()


def test_the_error_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("GVT_DATA_DIR", raising=False)
    proj = a_project(tmp_path, with_data=False)
    monkeypatch.setattr(corpora, "_PACKAGE_ROOT", tmp_path / "pkg" / "root")
    monkeypatch.chdir(proj)
    with pytest.raises(DataError) as err:
        read_lines("$GVT_DATA_DIR/coco/train.txt")
    text = str(err.value)
    assert f"{(tmp_path / 'shared' / 'data').resolve()} (../shared/data next to the working directory's project " \
           "root, not there)" in text
    assert f"{(tmp_path / 'pkg' / 'shared' / 'data').resolve()} (../shared/data next to the installed package's " \
           "project root, not there)" in text
    assert "set GVT_DATA_DIR" in text


def test_the_environment_variable_is_the_only_place_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("GVT_DATA_DIR", str(tmp_path / "mine"))
    monkeypatch.chdir(a_project(tmp_path))  # ../shared/data exists here, but the variable decides
    assert data_dir() == tmp_path / "mine"
    assert [how for _, how in corpora.data_dir_candidates()] == ["$GVT_DATA_DIR"]


@pytest.mark.parametrize("reference", ["$GVT_DATA_DIR", "${GVT_DATA_DIR}"])
def test_the_environment_variable_sets_the_folder(tmp_path, monkeypatch, reference):
    monkeypatch.setenv("GVT_DATA_DIR", str(tmp_path))
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "train.txt").write_text("a man riding a horse\n", encoding="utf-8")
    assert read_lines(f"{reference}/coco/train.txt") == ["a man riding a horse"]


def test_a_text_data_module_reads_from_the_corpora_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GVT_DATA_DIR", str(tmp_path))
    (tmp_path / "t.txt").write_text("".join(f"the cat sat {i}\n" for i in range(20)), encoding="utf-8")
    dm = TextDataModule(train="$GVT_DATA_DIR/t.txt")
    assert sum(len(dm.examples(s)) for s in ("train", "val", "test")) == 20
    dm = TextDataModule(train="t.txt", root="$GVT_DATA_DIR")
    assert sum(len(dm.examples(s)) for s in ("train", "val", "test")) == 20


def test_a_missing_corpus_says_how_to_point_at_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GVT_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"no such file .*the corpora folder is .*nowhere.*set GVT_DATA_DIR"):
        read_lines("$GVT_DATA_DIR/coco/train.txt")


def test_no_config_or_preset_hard_codes_a_path_into_the_shared_folder():
    into_shared = re.compile(r"\.\./shared/data/\w")
    found = [str(p.relative_to(ROOT)) for folder in ("configs", "experiments", "modules")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".yaml") and into_shared.search(p.read_text())]
    assert found == []


def test_tests_needing_a_missing_corpus_skip_with_the_reason(tmp_path):
    env = {**os.environ, "GVT_DATA_DIR": str(tmp_path / "nowhere")}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                          "tests/test_corpora.py::test_multi30k_first_pair_is_aligned_and_keeps_case"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "1 skipped" in out.stdout
    assert f"the real corpora are not at {tmp_path / 'nowhere'}: set GVT_DATA_DIR" in out.stdout
