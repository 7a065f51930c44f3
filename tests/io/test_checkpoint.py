"""save_compressed: atomic writes (a crash leaves no complete-looking folder), replacing only
our own output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_batch, tiny_model

from hf_compress.errors import CheckpointError
from hf_compress.io.checkpoint import (
    COMPRESSION_CONFIG,
    load_compressed,
    read_compression_config,
    save_compressed,
)


class Boom(RuntimeError):
    pass


def _explode(folder):
    assert (folder / "model.safetensors").is_file()  # weights were already written when the crash comes
    raise Boom("disk full")


def test_save_then_load_gives_identical_outputs_and_records_versions(tmp_path):
    model = tiny_model("gpt2")
    out = save_compressed(
        model,
        tmp_path / "m",
        compression_config={"stages": [{"stage": "x"}], "recipe": {"task": "causal-lm"}},
    )
    cc = read_compression_config(out)
    assert cc["stages"] == [{"stage": "x"}] and cc["versions"]["torch"] == torch.__version__
    again = load_compressed(out)  # task from compression_config.json: causal LM
    batch = tiny_batch()
    torch.testing.assert_close(again(**batch).logits, model(**batch).logits)


def test_crash_mid_save_leaves_nothing_that_looks_complete(tmp_path):
    target = tmp_path / "m"
    with pytest.raises(Boom):
        save_compressed(tiny_model("bert"), target, extra=_explode)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too


def test_crash_while_replacing_keeps_the_previous_output_intact(tmp_path, monkeypatch):
    target = tmp_path / "m"
    save_compressed(tiny_model("bert", seed=1), target, compression_config={"run": 1})
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real_replace, renames = os.replace, []

    def replace(src, dst):  # the power goes out between moving the old output aside and moving the new in
        renames.append((Path(src).name, Path(dst).name))
        if Path(dst) == target and Path(src).name.startswith(".m.tmp-"):
            raise Boom("power cut between the two renames")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Boom):
        save_compressed(tiny_model("bert", seed=2), target, compression_config={"run": 2})
    moved_aside = [i for i, (src, dst) in enumerate(renames) if src == "m" and dst.startswith(".m.old-")]
    assert moved_aside and renames[moved_aside[0] + 1][0].startswith(".m.tmp-")  # it crashed mid-replace
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or set-aside folder left
    monkeypatch.undo()
    save_compressed(
        tiny_model("bert", seed=2), target, compression_config={"run": 2}
    )  # a finished rerun replaces it
    assert json.loads((target / COMPRESSION_CONFIG).read_text())["run"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="hf_compress did not write"):
        save_compressed(tiny_model("bert"), target)
    assert (target / "notes.txt").read_text() == "keep me"
    with pytest.raises(CheckpointError, match="is a file"):
        save_compressed(tiny_model("bert"), target / "notes.txt")
