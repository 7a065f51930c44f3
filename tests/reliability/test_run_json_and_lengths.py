"""Issue 15 items 8 and 9: `run --json` with a distill stage prints one JSON document on stdout, and the distill
max_length is capped by the model's position limit (tiny.yaml has 64 positions, the default max_length 128)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

from hf_compress.cli import main

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"


def test_run_json_with_a_default_distill_stage_is_clean_json(tmp_path, capsys):
    texts_path = tmp_path / "long.txt"  # 200 characters a line: longer than the 64 positions
    texts_path.write_text("\n".join(("river city music science history " * 7)[:200] for _ in range(40)))
    buf = io.StringIO()
    stages = "stages=[{student_from_teacher: {num_layers: 2}}, {distill: {alpha_hidden: 1.0, max_steps: 2, batch_size: 4}}]"
    with redirect_stdout(buf):
        code = main(["run", str(TINY), "--set", stages, "--set", f"data.name={texts_path}", "--set",
                     "evaluate=[size]", "--output-dir", str(tmp_path / "out"), "--json"])
    assert code == 0, capsys.readouterr().err[-2000:]
    data = json.loads(buf.getvalue())  # nothing but the JSON document
    assert [s["stage"] for s in data["stages"]] == ["student_from_teacher", "distill"]
