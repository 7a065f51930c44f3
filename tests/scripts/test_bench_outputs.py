"""A --tiny / --quick benchmark run never overwrites a published table in benchmarks/ unless --output names
it (defect: bench_snli --tiny and five --quick scripts wrote straight into benchmarks/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hf_compress.evaluation import report_path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_smoke_runs_go_to_a_temporary_file_unless_asked_by_name(tmp_path):
    published = tmp_path / "benchmarks" / "x.md"
    assert report_path(None, published, smoke=False) == published
    smoke = report_path(None, published, smoke=True)
    assert smoke != published and "benchmarks" not in smoke.parts and smoke.name == "x-smoke.md"
    assert report_path(str(published), published, smoke=True) == published  # asked for by name


@pytest.mark.parametrize("script", sorted(SCRIPTS.glob("*.py")), ids=lambda p: p.name)
def test_no_script_defaults_its_output_to_a_published_table(script):
    text = script.read_text()
    if "--quick" not in text and "--tiny" not in text:
        pytest.skip("no smoke mode")
    assert not re.search(r"""["']--output["'][^)]*default=["'][^"']*benchmarks/""", text, re.S)
    assert not re.search(r"""if args\.output else ROOT / ["']benchmarks""", text)


def test_bench_snli_tiny_without_output_leaves_the_published_table_alone(tmp_path, monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_snli", SCRIPTS / "bench_snli.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_snli", bench)  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "ROOT", tmp_path)  # where benchmarks/snli.md would be
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert bench.main(["--tiny", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert not (tmp_path / "benchmarks" / "snli.md").exists()
    assert (tmp_path / "tmp" / "snli-smoke.md").is_file()
