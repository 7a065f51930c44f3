"""Issue 15 items 10, 14, 18, 19, 20: what `run` may replace, when it checks, leftovers of a killed save, a
lock against a second concurrent run, and output paths that must not be taken literally."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hf_compress.errors import CheckpointError
from hf_compress.io.checkpoint import save_compressed
from hf_compress.io.output_dir import check_output_dir, output_lock
from hf_compress.cli import main
from tiny_models import tiny_model

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"


@pytest.fixture
def model():
    return tiny_model("bert")


def test_a_foreign_compression_config_does_not_license_replacing_a_folder(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "compression_config.json").write_text("{}")
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(CheckpointError, match="thesis.tex"):
        save_compressed(model, out)
    assert (out / "thesis.tex").read_text() == "years of work"


def test_files_a_user_added_to_an_earlier_output_are_not_deleted(model, tmp_path):
    out = save_compressed(model, tmp_path / "out")
    (out / "my-notes.md").write_text("keep me")
    with pytest.raises(CheckpointError, match="my-notes.md"):
        save_compressed(model, out)
    assert (out / "my-notes.md").exists()
    (out / "my-notes.md").unlink()
    assert save_compressed(model, out) == out  # our own earlier output is replaced


@pytest.mark.parametrize("argv_tail, needle", [
    (["--output-dir", "/proc/version/x"], "output"),
    (["--push-to-hub", "not a repo id"], "repo"),
])
def test_validate_and_dry_run_check_output_dir_and_repo_id_first(argv_tail, needle, tmp_path, capsys):

    for command in (["validate"], ["run", "--dry-run"]):
        if command == ["validate"] and argv_tail[0] != "--output-dir":
            continue
        argv = [command[0], str(TINY), *command[1:], *argv_tail] if command[0] == "run" else \
            ["validate", str(TINY), "--set", f"output_dir={argv_tail[1]}"]
        assert main(argv) == 2, argv
        assert needle in capsys.readouterr().err


def test_run_checks_the_output_folder_before_loading(tmp_path, capsys, monkeypatch):
    import hf_compress.recipe.loading as loading

    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded before checking"))
    assert main(["run", str(TINY), "--output-dir", str(out)]) == 2
    assert "precious.txt" in capsys.readouterr().err


def test_a_kill_between_the_renames_is_recovered_on_the_next_save(model, tmp_path):
    out = save_compressed(model, tmp_path / "out")
    hidden = tmp_path / ".out.old-deadbeef"
    os.replace(out, hidden)  # what a kill right after the first rename leaves
    (tmp_path / ".out.tmp-cafebabe").mkdir()  # and a half-written temporary folder
    assert check_output_dir(out) == out
    assert out.is_dir() and (out / "compression_config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_second_concurrent_run_into_one_folder_is_refused(model, tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        import subprocess
        import sys

        code = ("import sys; sys.path.insert(0, 'tests'); from hf_compress.io.output_dir import output_lock\n"
                f"with output_lock({str(out)!r}): pass")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        assert proc.returncode != 0 and "another hf-compress run" in proc.stderr
        save_compressed(model, out)  # the holder itself may write
    assert not (tmp_path / ".out.lock").exists()


def test_a_symlinked_output_dir_stays_a_symlink(model, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    save_compressed(model, link)
    assert link.is_symlink() and (real / "config.json").is_file()


def test_the_working_directory_is_never_the_output(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for target in (".", str(tmp_path), str(tmp_path.parent)):
        with pytest.raises(CheckpointError, match="working directory"):
            save_compressed(model, target)
    assert os.getcwd() == str(tmp_path)


def test_tilde_is_expanded(model, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    out = save_compressed(model, "~/out")
    assert out == tmp_path / "out" and (tmp_path / "out" / "config.json").is_file()


def test_a_failed_save_leaves_no_new_parent_folders(model, tmp_path):
    def boom(folder):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_compressed(model, tmp_path / "a" / "b" / "out", extra=boom)
    assert list(tmp_path.iterdir()) == []


def test_the_manifest_lists_every_file_written(model, tmp_path):
    out = save_compressed(model, tmp_path / "out")
    files = json.loads((out / "compression_config.json").read_text())["files"]
    assert sorted(files) == sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
