"""Run a recipe: load -> stages in order (measured after each) -> save atomically with card and report ->
optional push to the Hub.

    >>> result = run_recipe("recipes/minilm-demo.yaml", overrides=["stages.1.distill.max_steps=10"])
    >>> print(result.table)
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecipeError, SurgeryError, UnsupportedArchitectureError
from .schema import EMBEDDING_METRICS, Recipe, apply_overrides, load_recipe, parse_recipe

__all__ = ["RunResult", "run_recipe", "check_destination"]

logger = logging.getLogger(__name__)

METRICS_HELP = (
    "All numbers were measured offline on this run's CPU by plain code in `hf_compress.evaluation` (no "
    "metric scripts or data are downloaded): parameters and bytes of the `*.safetensors` files; CPU latency "
    "is the median forward time on one held-out batch, base and compressed interleaved in one process "
    "(compare the ratio, not the milliseconds); *embedding cosine* is the mean cosine between base and "
    "compressed mean-pooled, L2-normalised sentence embeddings of held-out texts; *agreement* is the "
    "fraction of held-out tokens/examples where the argmax matches the base model; *topic probe* is "
    "nearest-centroid accuracy on Wikipedia topics from the embeddings (centroids from training texts); "
    "outside data no recipe trains on: *SNLI linear probe* is a logistic regression on [u, v, |u-v|, u*v] of "
    "frozen premise / hypothesis embeddings (1,500 training pairs, 1,000 test pairs), *SNLI ranking MRR* the "
    "mean reciprocal rank of each test premise's entailed hypothesis among all of them by cosine, and "
    "*Python-docs section probe* nearest-centroid accuracy of the documentation section (7 classes) of "
    "paragraphs from held-out files."
)


@dataclass
class RunResult:
    output_dir: Path | None
    rows: list[dict] = field(default_factory=list)  # base, then one row per stage
    table: str = ""  # markdown: base vs final
    records: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # CPU time of this process (all threads): a load-independent cost
    model: object = None  # the compressed model, in memory (as saved)
    measured: list[dict] = field(default_factory=list)  # base vs compressed: the card's table (disk_bytes too)


def _eval_data(recipe: Recipe, model, tokenizer, heldout: list[str] | None):
    from ..evaluation import tokenize_batches, wiki_texts
    from .measure import EvalData, clip_length

    if heldout is None:
        probes = {"topic_probe", *EMBEDDING_METRICS} & set(recipe.evaluate)
        heldout = wiki_texts("heldout", recipe.eval_samples) if probes else None
    if not heldout:
        return None
    texts = heldout[: recipe.eval_samples]
    max_length = clip_length(model, recipe.eval_max_length)
    batches = tokenize_batches(tokenizer, texts, batch_size=16, max_length=max_length)
    return EvalData(
        texts=texts, batches=batches, latency_inputs=batches[0], tokenizer=tokenizer, max_length=max_length
    )


def _final_rows(recipe: Recipe, base, model, base_row: dict, final_row: dict, data) -> list[dict]:
    from ..evaluation import latency_side_by_side

    rows = [dict(base_row, model="base"), dict(final_row, model="compressed")]
    if data is not None and "latency" in recipe.evaluate:
        lat = latency_side_by_side(
            {"base": base, "compressed": model}, data.latency_inputs, repeats=7, warmup=2
        )
        rows[0]["latency_ms"], rows[1]["latency_ms"] = 1e3 * lat["base"], 1e3 * lat["compressed"]
        rows[1]["speedup"] = lat["base"] / lat["compressed"]
    return rows


def run_recipe(
    recipe: Recipe | str | os.PathLike,
    *,
    overrides: list[str] | None = None,
    output_dir: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
    token: str | None = None,
    hub_api=None,
    extra=None,
) -> RunResult:
    """Run ``recipe`` (a :class:`Recipe` or a YAML path), with ``overrides`` (``"stages.1.distill.max_steps=10"``)
    applied to either, and return the measured :class:`RunResult`. ``extra(folder, final_rows)`` may add to the
    output folder (and its card) before it is renamed into place."""
    from ..io.output_dir import output_lock

    start, cpu_start = time.perf_counter(), time.process_time()
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:  # the same `--set` rules as for a file, on the object's plain data, validated again
        recipe = parse_recipe(apply_overrides(recipe.to_dict(), overrides))
    recipe = copy.deepcopy(recipe)
    if output_dir is not None:
        recipe.output_dir = str(output_dir)
    if push_to_hub is not None:
        recipe.push_to_hub = push_to_hub
    check_destination(recipe)  # before anything is loaded: a bad folder or repo id fails in seconds
    with output_lock(recipe.output_dir):
        return _run(recipe, token=token, hub_api=hub_api, extra=extra, start=start, cpu_start=cpu_start)


def check_destination(recipe: Recipe) -> None:
    """The output folder may be written (see :mod:`hf_compress.io.output_dir`) and the Hub repo id, if any,
    is well formed: what ``validate``, ``--dry-run`` and ``run`` check first."""
    from ..io.hub import check_repo_id
    from ..io.output_dir import check_output_dir

    check_output_dir(recipe.output_dir, recover=False)
    if recipe.push_to_hub:
        check_repo_id(recipe.push_to_hub)


def _run(recipe: Recipe, *, token, hub_api, extra, start: float, cpu_start: float) -> RunResult:
    import torch

    from ..evaluation import checkpoint_bytes
    from ..arch import hidden_size
    from ..assets import hub_id
    from ..io.checkpoint import save_compressed
    from ..io.st_wrapper import copy_sentence_transformers_files, is_sentence_transformers_folder
    from ..io.model_card import build_model_card, format_results_table
    from ..io.report import plot_report
    from ..io.verify import check_reload
    from .loading import load_model, load_texts
    from .measure import clip_length, measure, quality_key
    from .stages import StageContext, run_stage

    torch.manual_seed(recipe.seed)
    base, tokenizer, source = load_model(recipe.model, recipe.task, recipe.seed)
    train, heldout = load_texts(recipe.data) if recipe.data else ([], None)
    data = _eval_data(recipe, base, tokenizer, heldout)
    names = [s.name for s in recipe.stages]
    first_copies = names and names[0] != "student_from_teacher"
    ctx = StageContext(
        model=copy.deepcopy(base) if first_copies else base,
        teacher=base,
        tokenizer=tokenizer,
        texts=train,
        task=recipe.task,
        seed=recipe.seed,
        max_length=clip_length(base, recipe.eval_max_length),
        max_positions=clip_length(base, 2**31),
    )
    rows = [measure("base", base, base, recipe.task, recipe.evaluate, data)]
    for i, stage in enumerate(recipe.stages):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            record = run_stage(ctx, stage.name, stage.config)
        except (SurgeryError, UnsupportedArchitectureError) as exc:  # the recipe asked it (layer 7 of 4): exit 2
            raise RecipeError(f"stages[{i}].{stage.name}: {exc}") from exc
        record["seconds"] = round(time.perf_counter() - t0, 2)
        record["cpu_seconds"] = round(time.process_time() - c0, 2)
        rows.append(measure(f"{i + 1}. {stage.name}", ctx.model, base, recipe.task, recipe.evaluate, data))
    final = _final_rows(recipe, base, ctx.model, rows[0], rows[-1], data)
    if source is not None and Path(source).is_dir():
        final[0]["disk_bytes"] = checkpoint_bytes(source)
    qkey = quality_key(recipe.task)
    base_name = recipe.model.name_or_path

    def write_extras(folder: Path) -> None:
        final[1]["disk_bytes"] = checkpoint_bytes(folder)
        if is_sentence_transformers_folder(source):  # before the card: it reads which library loads the folder
            copy_sentence_transformers_files(source, folder, hidden_size=hidden_size(ctx.model))
        table = format_results_table([{k: v for k, v in r.items() if k != "mem_bytes"} for r in final])
        final_table[0] = table
        timing = ", ".join(f"{r['stage']} {r['seconds']} s ({r['cpu_seconds']} CPU-s)" for r in ctx.records)
        notes = [f"Wall time per stage on this machine: {timing}."] if timing else []
        load, cores = os.getloadavg()[0], os.cpu_count()
        notes.append(
            f"Machine: {cores} CPU cores, load average {load:.1f} when saving (above {cores} the "
            f"latencies are inflated by other processes; the side-by-side ratio is still fair)."
        )
        notes.append(
            "After each stage (latency here: that model alone, not interleaved):\n\n"
            + format_results_table([{k: v for k, v in r.items() if k != "disk_bytes"} for r in rows])
        )
        card = build_model_card(
            folder,
            base=base_name,
            task=recipe.task,
            stage_names=names,
            results_table=table,
            recipe_yaml=recipe.to_yaml(),
            notes=notes,
            metrics_help=METRICS_HELP,
        )
        card.save(folder / "README.md")
        (folder / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
        plot_report(
            rows,
            folder / "report.png",
            quality_key=qkey if any(qkey in r for r in rows) else None,
            title=f"{base_name or recipe.model.config.get('model_type')}: base and after each stage",
        )
        if extra is not None:
            extra(folder, final)

    final_table = [""]
    compression_config = {
        "base_model": hub_id(base_name) if base_name else None,  # the card's id (a bundled asset's Hub id)
        "task": recipe.task,
        "stages": ctx.records,
        "recipe": recipe.to_dict(),
        "measured": final,
        "per_stage": rows,
    }
    out = save_compressed(
        ctx.model,
        recipe.output_dir,
        tokenizer=tokenizer,
        compression_config=compression_config,
        extra=write_extras,
        verify=lambda folder: check_reload(ctx.model, folder, recipe.task),
    )
    if recipe.push_to_hub:
        from ..io.hub import push_to_hub as push

        push(out, recipe.push_to_hub, token=token, api=hub_api)
    return RunResult(
        output_dir=out,
        rows=rows,
        table=final_table[0],
        records=ctx.records,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        model=ctx.model,
        measured=final,
    )
