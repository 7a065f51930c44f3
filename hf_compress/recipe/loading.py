"""Resolve a recipe's ``model:`` and ``data:`` into a model, a tokenizer and texts.

``model:`` is a bundled asset name (:mod:`hf_compress.assets`), a local folder or a Hub id (network needed),
or ``{config: {model_type: ..., ...}}`` for a freshly initialised model (tests, smoke runs). ``data:`` is a
bundled data set (``wiki-summaries``, ``snli``) or a local ``.txt`` (one text a line), ``.json`` or
``.jsonl`` file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import RecipeError
from ..tasks import get_task
from ..io.folder_checks import check_loading_info, check_model_folder
from .schema import DataSpec, ModelSpec

__all__ = ["load_model", "load_texts", "char_tokenizer"]

logger = logging.getLogger(__name__)



def char_tokenizer():
    """A tiny character-level tokenizer (52 ids) for models built from a bare ``config`` without one."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + list("abcdefghijklmnopqrstuvwxyz0123456789.,;:'\"!?()-"))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), "isolated")]
    )
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _resolve(name: str) -> str:
    from ..assets import MODEL_ASSETS, get_asset

    if name in MODEL_ASSETS and not Path(name).exists():
        return str(get_asset(name))
    return name


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model")


def _known_config_keys(cfg: dict, spec: ModelSpec) -> dict:
    """``cfg`` after refusing keys the family's config class does not know (a typo would be kept silently)."""
    import difflib

    import transformers

    cls = transformers.AutoConfig.for_model(spec.config["model_type"]).__class__
    known = set(cls().to_dict()) | set(getattr(cls, "attribute_map", {}))
    for key in cfg:
        if key not in known:
            match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean `{match[0]}`?" if match else ""
            raise RecipeError(f"model.config.{key}: unknown key for {cls.__name__}{hint}")
    return cfg


def load_model(spec: ModelSpec, task: str, seed: int = 0):
    """``(model, tokenizer, source)``: the model in eval mode, its tokenizer and the folder it came from
    (``None`` for a config-built model)."""
    import torch
    import transformers

    auto = getattr(transformers, get_task(task, RecipeError).auto_class)
    dtype = getattr(torch, spec.dtype)
    if spec.config is not None:
        cfg = dict(spec.config)
        config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **_known_config_keys(cfg, spec))
        torch.manual_seed(seed)
        model = auto.from_config(config, dtype=dtype)
        source = None
    else:
        source = _resolve(spec.name_or_path)
        if Path(source).is_dir():
            check_model_folder(source)  # config family, safetensors only; before any weight is read
        logger.info("loading %s (%s) from %s", spec.name_or_path, auto.__name__, source)
        model, info = auto.from_pretrained(
            source, dtype=dtype, trust_remote_code=spec.trust_remote_code, revision=spec.revision,
            use_safetensors=True, output_loading_info=True,
        )
        check_loading_info(info, f"model {spec.name_or_path}", model.config.model_type)
        if not spec.trust_remote_code and getattr(model.config, "auto_map", None):
            # the stock class was used: an auto_map would point the output at code it does not ship
            logger.warning("dropping auto_map from %s's config (loaded without trust_remote_code)", source)
            del model.config.auto_map
        if spec.tokenizer is None and Path(source).is_dir() and not any(
            (Path(source) / f).exists() for f in _TOKENIZER_FILES
        ):
            raise RecipeError(
                f"model.name_or_path: {source} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, ...); "
                f"set model.tokenizer to the folder or Hub id of its tokenizer"
            )
    tok_source = spec.tokenizer if spec.tokenizer is not None else source
    if tok_source is None:
        tokenizer = char_tokenizer()
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            _resolve(tok_source), trust_remote_code=spec.trust_remote_code
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model.eval(), tokenizer, source


def _file_texts(path: Path, text_field: str | None) -> list[str]:
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        rows = list(rows.values()) if isinstance(rows, dict) else rows
    else:
        raise RecipeError(
            f"data.name: a local data file must end in .txt, .json or .jsonl, got {path.name!r}"
        )
    return _rows_texts(rows, path.name, text_field)


def _rows_texts(rows: list, source: str, text_field: str | None) -> list[str]:
    field = text_field or "text"
    if rows and isinstance(rows[0], str):
        return rows
    if not rows or not isinstance(rows[0], dict) or field not in rows[0]:
        raise RecipeError(
            f"data.text_field: rows of {source} have no field {field!r}; set `text_field` to one "
            f"of {sorted(rows[0]) if rows and isinstance(rows[0], dict) else '[]'}"
        )
    return [str(r[field]) for r in rows if r.get(field)]


def load_texts(data: DataSpec) -> tuple[list[str], list[str]]:
    """``(train_texts, heldout_texts)``, disjoint: a bundled data set's own split
    (:func:`hf_compress.assets.asset_texts`), else every 10th text held out
    (:func:`hf_compress.assets.heldout_split`); ``max_samples`` caps the training texts."""
    from ..assets import DATA_ASSETS, asset_texts, heldout_split

    if data.name in DATA_ASSETS:
        train, heldout = asset_texts(data.name, "calibration"), asset_texts(data.name, "heldout")
    else:
        if not Path(data.name).is_file():  # a Hub data set id (users with the network)
            import datasets

            split = "test" if data.split in ("test", "heldout") else "train"
            rows = _rows_texts(list(datasets.load_dataset(data.name, split=split)), data.name, data.text_field)
        else:
            rows = _file_texts(Path(data.name), data.text_field)
        train, heldout = heldout_split(rows, "calibration"), heldout_split(rows, "heldout")
    if data.split in ("test", "heldout"):
        train = heldout
    if data.max_samples is not None:
        train = train[: data.max_samples]
    if not train:
        raise RecipeError(f"data: {data.name!r} gave no texts")
    return train, heldout
