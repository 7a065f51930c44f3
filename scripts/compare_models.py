"""Compressed checkpoints side by side with their base: size, latency (all models interleaved in one process),
embedding cosine to the base, and the probes of the demo's outside-data table (benchmarks/demo-outside.md:
``topic_probe`` in domain, ``snli_probe``, ``snli_ranking``, ``docs_probe`` outside; hf_compress.recipe.probes).

    python scripts/compare_models.py minilm demo=out/minilm-l3-int8 auto=out/bench-auto/minilm-speedup5 \\
        --trust-remote-code --out /tmp/compare.json

Each int8 checkpoint is timed compiled (``compile_int8``, as the recipes that wrote them run it); ``--eager``
times the ``from_pretrained`` kernels instead. Prints a markdown table; ``--out`` writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROBES = ("snli_probe", "snli_ranking", "docs_probe")


def compare(base: str, folders: dict[str, str], repeats: int = 9, eager: bool = False, samples: int = 256,
            probes: bool = True, trust_remote_code: bool = False) -> list[dict]:
    import torch
    from transformers import AutoTokenizer

    from hf_compress.evaluation import (checkpoint_bytes, latency_side_by_side, model_bytes, param_count,
                                        tokenize_batches, wiki_texts)
    from hf_compress.io.checkpoint import load_compressed
    from hf_compress.methods.int8.compile import compile_int8
    from hf_compress.methods.int8.layer import Int8Linear
    from hf_compress.recipe.bench import resolve_model_path
    from hf_compress.recipe.measure import agreement
    from hf_compress.recipe.probes import outside_probes, topic_probe

    paths = {"base": resolve_model_path(base), **{k: resolve_model_path(v) for k, v in folders.items()}}
    models = {k: load_compressed(p, task="feature-extraction", trust_remote_code=trust_remote_code).eval()
              for k, p in paths.items()}
    compiled = {k for k, m in models.items() if not eager and any(isinstance(x, Int8Linear) for x in m.modules())}
    for key in compiled:
        compile_int8(models[key])
    tokenizer = AutoTokenizer.from_pretrained(paths["base"])
    batches = tokenize_batches(tokenizer, wiki_texts("heldout", samples), batch_size=16, max_length=128)
    rows = []
    for key, model in models.items():
        row = {"model": key, "path": str(paths[key]), "params": param_count(model), "mem_bytes": model_bytes(model),
               "disk_bytes": checkpoint_bytes(paths[key]), "compiled": key in compiled}
        with torch.inference_mode():
            row["embedding_cosine"] = agreement(model, models["base"], "feature-extraction", batches)
            if probes:
                t0 = time.perf_counter()
                row["topic_probe"] = topic_probe(model, tokenizer)
                row.update(outside_probes(model, tokenizer, PROBES))
                row["probe_seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    lat = latency_side_by_side(models, batches[0], repeats=repeats, warmup=2)  # 16 summaries x 128 tokens
    for row in rows:
        row["latency_ms"] = 1e3 * lat[row["model"]]
        row["speedup"] = lat["base"] / lat[row["model"]]
    return rows


def table(rows: list[dict]) -> str:
    cols = ["params", "disk MB", "latency ms", "speed-up", "cosine", "topic", "SNLI probe", "SNLI MRR", "docs"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        vals = [f"{r['params'] / 1e6:.2f}M", f"{r['disk_bytes'] / 1e6:.1f}", f"{r['latency_ms']:.1f}",
                f"{r['speedup']:.2f}×", f"{r['embedding_cosine']:.4f}"]
        vals += [f"{r[k]:.3f}" if k in r else "–" for k in ("topic_probe", *PROBES)]
        lines.append(f"| {r['model']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="the base model (a bundled asset name or a folder)")
    p.add_argument("folders", nargs="+", help="LABEL=FOLDER of each compressed checkpoint")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--eager", action="store_true", help="time int8 checkpoints with their eager kernels")
    p.add_argument("--no-probes", action="store_true")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run a folder's own modeling code (checkpoints with physically pruned BERT heads ship it)")
    p.add_argument("--out", help="JSON rows")
    args = p.parse_args(argv)
    folders = {}
    for item in args.folders:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            p.error(f"each folder must be LABEL=FOLDER, got {item!r}")
        folders[label] = folder
    load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    rows = compare(args.base, folders, args.repeats, args.eager, probes=not args.no_probes,
                   trust_remote_code=args.trust_remote_code)
    meta = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "load_before": load0,
            "load_after": os.getloadavg()[0], "threads": __import__("torch").get_num_threads()}
    print(table(rows))
    print(json.dumps(meta))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"rows": rows, **meta}, fh, indent=2, default=float)


if __name__ == "__main__":
    main()
