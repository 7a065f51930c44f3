"""Stock ``from_pretrained`` rebuilds Int8Linear from our compressed-tensors checkpoints (package absent)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import tiny_batch, tiny_model

from hf_compress import quantize_int8
from hf_compress.errors import QuantizationError
from hf_compress.methods.int8.loader import register

ROOT = Path(__file__).resolve().parents[3]
CASES = [("bert", "masked-lm"), ("gpt2", "causal-lm"), ("llama", "causal-lm")]
MODES = ("w8a8", "w8a16")

# Runs in a fresh interpreter where compressed-tensors cannot be found, as on a machine without it.
_CHILD = textwrap.dedent("""
    import json, sys
    sys.modules["compressed_tensors"] = None  # find_spec() -> None, import -> ImportError
    import hf_compress
    report = {"heavy_imports": sorted({"torch", "transformers"} & set(sys.modules))}
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING
    from hf_compress import Int8Linear
    report["quantizer"] = AUTO_QUANTIZER_MAPPING["compressed-tensors"].__name__
    jobs = json.loads(sys.argv[1])
    batch = torch.load(jobs["batch"])
    for job in jobs["models"]:
        auto = AutoModelForMaskedLM if job["task"] == "masked-lm" else AutoModelForCausalLM
        model = auto.from_pretrained(job["path"])
        with torch.no_grad():
            logits = model(**batch).logits
        save_file({"logits": logits.contiguous()}, job["path"] + "/child_logits.safetensors")
        model.save_pretrained(job["path"] + "/resaved")
        report[job["path"]] = sum(isinstance(m, Int8Linear) for m in model.modules())
    print("REPORT" + json.dumps(report))
""")


def _run_child(code: str, *args: str, env_extra: dict | None = None) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    env.update(env_extra or {})
    for attempt in range(2):  # one retry for a start-up crash, never for a wrong result
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            cwd=str(ROOT),
        )
        if proc.returncode >= 0:
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_fresh_process_without_compressed_tensors_loads_identical_models(tmp_path):
    batch = tiny_batch()
    torch.save(batch, tmp_path / "batch.pt")
    jobs, expected = [], {}
    for model_type, task in CASES:
        for mode in MODES:
            model = quantize_int8(tiny_model(model_type, task), mode=mode)
            path = tmp_path / f"{model_type}-{mode}"
            model.save_pretrained(path)
            with torch.no_grad():
                expected[str(path)] = (
                    model(**batch).logits,
                    sum(m.__class__.__name__ == "Int8Linear" for m in model.modules()),
                )
            jobs.append({"path": str(path), "task": task})
    out = _run_child(_CHILD, json.dumps({"batch": str(tmp_path / "batch.pt"), "models": jobs}))
    report = json.loads(out.split("REPORT", 1)[1])
    assert report["quantizer"] == "Int8CompressedTensorsQuantizer"
    assert report["heavy_imports"] == []  # import hf_compress stays light: registration is deferred
    for path, (logits, n_int8) in expected.items():
        assert report[path] == n_int8 > 0
        assert torch.equal(load_file(f"{path}/child_logits.safetensors")["logits"], logits)
        first, second = load_file(f"{path}/model.safetensors"), load_file(f"{path}/resaved/model.safetensors")
        assert first.keys() == second.keys()
        assert all(first[k].dtype == second[k].dtype and torch.equal(first[k], second[k]) for k in first)
        qc = [
            json.loads(Path(p, "config.json").read_text())["quantization_config"]
            for p in (path, f"{path}/resaved")
        ]
        assert qc[0] == qc[1]


def test_installed_compressed_tensors_keeps_transformers_loader(tmp_path):
    fake = tmp_path / "site" / "compressed_tensors"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '0.20.1'\n")
    code = (
        "import hf_compress\nfrom transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING as M\n"
        "print('QUANTIZER', M['compressed-tensors'].__name__)"
    )
    out = _run_child(code, env_extra={"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path / 'site'}"})
    assert "QUANTIZER CompressedTensorsHfQuantizer" in out


@pytest.fixture
def our_loader():
    """Our quantizer registered in this process even if compressed-tensors is installed; restored after."""
    from transformers.quantizers import auto

    saved = (dict(auto.AUTO_QUANTIZER_MAPPING), dict(auto.AUTO_QUANTIZATION_CONFIG_MAPPING))
    register(force=True)
    yield
    auto.AUTO_QUANTIZER_MAPPING.clear()
    auto.AUTO_QUANTIZER_MAPPING.update(saved[0])
    auto.AUTO_QUANTIZATION_CONFIG_MAPPING.clear()
    auto.AUTO_QUANTIZATION_CONFIG_MAPPING.update(saved[1])


def _checkpoint(tmp_path, mode):
    path = tmp_path / mode
    quantize_int8(tiny_model("llama"), mode=mode).save_pretrained(path)
    return path


def _edit_tensors(path, fn):
    tensors = load_file(path / "model.safetensors")
    fn(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def _edit_config(path, fn):
    config = json.loads((path / "config.json").read_text())
    fn(config["quantization_config"])
    (path / "config.json").write_text(json.dumps(config))


Q = "model.layers.0.self_attn.q_proj."
BAD = {
    "float weight": (
        "w8a8",
        lambda p: _edit_tensors(p, lambda t: t.__setitem__(Q + "weight", t[Q + "weight"].float())),
        "must be int8",
    ),
    "missing scale": ("w8a8", lambda p: _edit_tensors(p, lambda t: t.pop(Q + "weight_scale")), "missing"),
    "missing packed scale": (
        "w8a16",
        lambda p: _edit_tensors(p, lambda t: t.pop(Q + "weight_scale")),
        "missing",
    ),
    "int64 packed": (
        "w8a16",
        lambda p: _edit_tensors(
            p, lambda t: t.__setitem__(Q + "weight_packed", t[Q + "weight_packed"].long())
        ),
        "int32",
    ),
    "wrong shape record": (
        "w8a16",
        lambda p: _edit_tensors(p, lambda t: t.__setitem__(Q + "weight_shape", torch.tensor([32, 31]))),
        "weight_shape",
    ),
    "4-bit scheme": (
        "w8a16",
        lambda p: _edit_config(
            p, lambda q: q["config_groups"]["group_0"]["weights"].__setitem__("num_bits", 4)
        ),
        "num_bits",
    ),
    "group scheme": (
        "w8a8",
        lambda p: _edit_config(
            p, lambda q: q["config_groups"]["group_0"]["weights"].__setitem__("strategy", "group")
        ),
        "strategy",
    ),
    "fp8 format": (
        "w8a8",
        lambda p: _edit_config(
            p, lambda q: q["config_groups"]["group_0"].__setitem__("format", "float-quantized")
        ),
        "format",
    ),
    "static activations": (
        "w8a8",
        lambda p: _edit_config(
            p, lambda q: q["config_groups"]["group_0"]["input_activations"].__setitem__("dynamic", False)
        ),
        "dynamic",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoints_are_refused(tmp_path, our_loader, case):
    from transformers import AutoModelForCausalLM

    mode, corrupt, match = BAD[case]
    path = _checkpoint(tmp_path, mode)
    corrupt(path)
    with pytest.raises(QuantizationError, match=match):
        AutoModelForCausalLM.from_pretrained(path)


def test_format_matches_compressed_tensors_library_when_available():
    """Runs tests/methods/int8/test_loader_ct.py where the compressed-tensors package is importable: here, or in
    the interpreter named by HF_COMPRESS_CT_PYTHON (a separate environment keeps this one package-free)."""
    try:
        import compressed_tensors  # noqa: F401

        pytest.skip("compressed-tensors is importable here: test_loader_ct.py runs in this session")
    except ImportError:
        pass
    python = os.environ.get("HF_COMPRESS_CT_PYTHON")
    if not python:
        pytest.skip(
            "compressed-tensors not installed; set HF_COMPRESS_CT_PYTHON to an interpreter that has it"
        )
    proc = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/methods/int8/test_loader_ct.py"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0 and " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[
        -3000:
    ]
