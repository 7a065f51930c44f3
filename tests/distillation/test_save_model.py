"""DistillationTrainer.save_model into a folder that already holds things: the model's files arrive from a
temporary folder by rename, a crash leaves the previous model whole, and nothing hf_compress did not write is
replaced or deleted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from distill_fixtures import make_args, make_dataset, make_models

from hf_compress import CheckpointError, DistillationTrainer


class Boom(RuntimeError):
    pass


def _trainer(tmp_path):
    teacher, student = make_models("gpt2")
    args = make_args(tmp_path, per_device_train_batch_size=4, max_steps=1)
    return DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=make_dataset("gpt2"))


def _files(folder: Path) -> dict:
    """name -> (inode, bytes): a file replaced by one of equal content still shows as replaced."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def busy_folder(tmp_path):
    """An output folder with a checkpoint and a user's notes, and a first model saved into it."""
    folder = tmp_path / "out"
    (folder / "checkpoint-1").mkdir(parents=True)
    (folder / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (folder / "notes.txt").write_text("keep me")
    trainer = _trainer(tmp_path)
    trainer.save_model(str(folder))
    assert (folder / "model.safetensors").is_file() and (folder / "notes.txt").read_text() == "keep me"
    return folder, trainer


def test_a_crash_while_moving_files_in_leaves_the_previous_model_whole(busy_folder, monkeypatch):
    folder, trainer = busy_folder
    before = _files(folder)
    trainer.train()  # new weights
    real, moved = os.replace, []

    def replace(src, dst):  # the second file moved into the folder fails: one new file is already in
        if Path(dst).parent == folder and Path(src).parent.name.startswith(".hf_compress-save-"):
            moved.append(Path(dst).name)
            if len(moved) == 2:
                raise Boom("disk full while moving the new files in")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Boom):
        trainer.save_model(str(folder))
    monkeypatch.undo()
    assert len(moved) == 2
    assert _files(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []  # no temp left


def test_a_finished_save_replaces_only_what_hf_compress_wrote(busy_folder):
    folder, trainer = busy_folder
    (folder / "model-00009-of-00009.safetensors").write_bytes(b"user's own file")
    trainer.train()
    trainer.save_model(str(folder))
    assert (folder / "notes.txt").read_text() == "keep me"
    assert (folder / "checkpoint-1" / "trainer_state.json").read_text() == "{}"
    assert (folder / "model-00009-of-00009.safetensors").read_bytes() == b"user's own file"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def test_a_file_of_the_same_name_that_hf_compress_did_not_write_is_refused(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}')
    with pytest.raises(CheckpointError, match="config.json.*did not write"):
        _trainer(tmp_path).save_model(str(folder))
    assert (folder / "config.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
