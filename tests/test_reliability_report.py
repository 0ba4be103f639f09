"""Where ``suite report`` writes: never into someone else's folder, never a traceback for one it cannot write."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import synthetic_store as synthetic
from suite.app.cli import main
from tests.test_faults import COUNTS


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "store"
    synthetic.write_store(root, methods=("lora", "full"), subtasks=("sst2",), n_examples=40)
    return root


def _refused(capsys, *args: str) -> str:
    COUNTS["faults injected"] += 1
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_folder_it_cannot_create_is_refused_with_a_message(store, capsys):
    err = _refused(capsys, str(store), "-o", "/proc/suite-site")
    assert "cannot write the site to '/proc/suite-site'" in err
    assert not Path("/proc/suite-site").exists()


def test_someone_elses_folder_is_refused_and_force_writes_beside_their_files(store, tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    err = _refused(capsys, str(store), "-o", str(out))
    assert "holds files that no 'suite report' wrote" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]  # nothing written before the refusal
    assert main(["report", str(store), "-o", str(out), "--force"]) == 0
    assert (out / "index.html").is_file() and (out / "thesis.tex").read_text() == "mine"
    assert main(["report", str(store), "-o", str(out)]) == 0  # ours now: its manifest says so


def test_a_refused_render_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new-site"
    err = _refused(capsys, str(tmp_path / "no-store"), "-o", str(out))
    assert "no result store" in err and not out.exists()
