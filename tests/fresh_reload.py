"""The shared fresh-process reload check: saved checkpoints reload with stock transformers in a new Python
process that never imports hf_compress, and compute what the live model computed.

    save_case(tmp_path / "llama", model, batch)          # model.save_pretrained + the expected logits
    results = reload_fresh(tmp_path)                      # one subprocess for every case folder
    assert results["llama"]["logits_diff"] <= 1e-5

Each result holds ``module`` (the reloaded class's module: ``transformers.models...`` for a stock class,
``transformers_modules...`` for shipped remote code), ``logits_diff`` (max |diff| over every position),
``n_params``, ``config`` (the reloaded config as a dict) and, for causal LMs, ``same_tokens`` / ``scores_diff``
between greedy generation with and without the KV cache. One subprocess serves all cases (a transformers
import costs seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

__all__ = ["save_case", "reload_fresh"]

_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    import transformers
    root, remote = sys.argv[1], sys.argv[2] == "1"
    results = {}
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isfile(os.path.join(folder, "expected.pt")):
            continue
        expected = torch.load(os.path.join(folder, "expected.pt"), weights_only=True)
        auto = getattr(transformers, expected["auto"])
        model = auto.from_pretrained(folder, trust_remote_code=remote).eval()
        batch, causal = expected["batch"], expected["causal"]
        out = {"module": type(model).__module__, "n_params": sum(p.numel() for p in model.parameters()),
               "config": model.config.to_dict()}
        with torch.no_grad():
            logits = model(**batch, **({"use_cache": False} if causal else {})).logits
            out["logits_diff"] = (logits - expected["logits"]).abs().max().item()
            if causal and expected["generate"]:
                prompt = batch["input_ids"][:1, :5]
                gen = {}
                for cache in (True, False):
                    g = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                       do_sample=False, use_cache=cache, return_dict_in_generate=True,
                                       output_scores=True, pad_token_id=0)
                    gen[cache] = (g.sequences, torch.stack(g.scores))
                out["same_tokens"] = bool(torch.equal(gen[True][0], gen[False][0]))
                out["scores_diff"] = (gen[True][1] - gen[False][1]).abs().max().item()
        results[name] = out
    results["_imported_hf_compress"] = any(m.startswith("hf_compress") for m in sys.modules)
    print(json.dumps(results, default=str))
""")


def _logits(model, batch: dict, causal: bool) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, **({"use_cache": False} if causal else {})).logits  # every position, padded too


def save_case(folder: Path, model, batch: dict, generate: bool = True) -> torch.Tensor:
    """``model.save_pretrained(folder)`` plus what the reload must reproduce; returns the live logits."""
    causal = model.can_generate()
    auto = {"ForMaskedLM": "AutoModelForMaskedLM", "ForSequenceClassification": "AutoModelForSequenceClassification"}
    name = next((v for k, v in auto.items() if type(model).__name__.endswith(k)), "AutoModel")
    name = "AutoModelForCausalLM" if causal else name
    logits = _logits(model, batch, causal)
    model.save_pretrained(folder)
    torch.save({"batch": batch, "logits": logits, "causal": causal, "auto": name, "generate": generate},
               Path(folder) / "expected.pt")
    return logits


def reload_fresh(root: Path, trust_remote_code: bool = False, timeout: int = 300) -> dict[str, dict]:
    """Reload every case folder under ``root`` in one fresh process (no PYTHONPATH, offline); asserts that
    the process never imported hf_compress and returns ``{case: result}``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_HOME"] = str(Path(root) / ".hf_home")  # remote code modules land here, not in the user's cache
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(root), "1" if trust_remote_code else "0"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.pop("_imported_hf_compress") is False, "the fresh process imported hf_compress"
    return results
