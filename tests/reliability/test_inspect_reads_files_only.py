"""Issue 15 item 3: `hf-compress inspect` reads files only: it never imports a folder's Python (even when
asked "y" on stdin), never prompts, and its --json output stays valid JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_compress.cli import main

REPO = Path(__file__).resolve().parents[2]


def _remote_code_folder(tmp_path: Path, model_type: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    sentinel = tmp_path / "EXECUTED"
    code = f"open({str(sentinel)!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\n" \
           f"class EvilConfig(PretrainedConfig):\n    model_type = {model_type!r}\n"
    (folder / "evil.py").write_text(code)
    config = {"model_type": model_type, "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.M"},
              "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("model_type", ["evil_unknown_type", "bert"])
def test_inspect_never_runs_folder_code_nor_prompts(model_type, tmp_path):
    folder = _remote_code_folder(tmp_path, model_type)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "hf_compress.cli", "inspect", str(folder), "--json"],
                          input="y\ny\ny\n", capture_output=True, text=True, env=env, timeout=120)
    assert not (tmp_path / "EXECUTED").exists(), "inspect executed the folder's Python"
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)  # the whole stdout is one JSON document (no prompt text)
    assert info["model_type"] == model_type and info["auto_map"] == ["AutoConfig", "AutoModel"]
    assert info.get("layers") == (2 if model_type == "bert" else None)


def test_inspect_of_a_damaged_config_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{not json")
    assert main(["inspect", str(tmp_path), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json" in err
