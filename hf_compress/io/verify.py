"""Reload a folder just written and check it reproduces the model in memory (the runner's last gate).

A surgery that leaves a config inconsistent with its weights (old layer numbers in ``pruned_heads``, a
head count the weights no longer have) writes a folder that ``from_pretrained`` cannot load, or loads to a
different function. :func:`check_reload` loads the folder the way a user would (``from_pretrained`` with
the task's Auto class; remote code only where the folder holds the files its ``auto_map`` names) and
compares every tensor's shape and the outputs on a fixed batch. Any difference is a
:class:`~hf_compress.errors.CheckpointError` and the run writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["check_reload"]

logger = logging.getLogger(__name__)


def _probe_batch(model):
    import torch

    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 8:
        raise CheckpointError(f"config.vocab_size must be >= 8 to check the saved model, got {vocab}")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (2, 8), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _first_output(model, batch):
    import torch

    param = next(model.parameters())
    with torch.no_grad():
        out = model(**{k: v.to(param.device) for k, v in batch.items()})
    tensor = out[0] if isinstance(out, tuple) else next(v for v in out.values() if torch.is_tensor(v))
    return tensor.float().cpu()


def _remote_code_files_present(folder: Path) -> bool:
    """Whether ``auto_map`` (if any) names only modules whose files are in ``folder``."""
    auto_map = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    for ref in auto_map.values():
        for item in ref if isinstance(ref, (list, tuple)) else [ref]:
            if item and not (folder / f"{item.split('--')[-1].rpartition('.')[0]}.py").is_file():
                raise CheckpointError(
                    f"the saved config's auto_map names {item!r} but {folder.name} has no such file: the "
                    f"checkpoint would not load"
                )
    return bool(auto_map)


@contextlib.contextmanager
def _eagerly(model):
    """``model`` with every ``nn.Module.compile``-d module running eagerly (restored after). A compiled int8
    model fuses the per-token rounding differently from the eager kernels: on MiniLM W8A8 (fbgemm) some
    activations land one quantization step apart and the outputs differ by up to 0.09. That is the compiler,
    not the files: the files are checked against the same eager arithmetic the reloaded model runs."""
    compiled = [(m, m._compiled_call_impl) for m in model.modules()
                if getattr(m, "_compiled_call_impl", None) is not None]
    for m, _ in compiled:
        m._compiled_call_impl = None
    try:
        yield
    finally:
        for m, call in compiled:
            m._compiled_call_impl = call


def check_reload(model, folder: str | Path, task: str) -> None:
    """Load ``folder`` with ``from_pretrained`` and raise :class:`CheckpointError` unless every tensor has
    the in-memory shape and the outputs on a fixed batch agree with ``model``'s."""
    import torch

    from .checkpoint import load_compressed

    folder = Path(folder)
    trust = _remote_code_files_present(folder)
    try:
        reloaded = load_compressed(folder, task=task, trust_remote_code=trust, dtype=model.dtype)
    except Exception as exc:  # noqa: BLE001  any loader failure means the folder is broken
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"the saved checkpoint does not reload ({type(exc).__name__}: {msg}); nothing was written"
        ) from exc
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reloaded.state_dict().items()}
    bad = sorted(k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k])
    if bad:
        raise CheckpointError(
            f"the saved checkpoint reloads with other shapes ({bad[0]}: {theirs[bad[0]]} instead of "
            f"{mine[bad[0]]}); nothing was written"
        )
    batch = _probe_batch(model)
    was_training = model.training
    model.eval()
    try:
        with _eagerly(model):  # the reload runs eagerly: compare like with like
            expected = _first_output(model, batch)
        got = _first_output(reloaded, batch)
    finally:
        model.train(was_training)
    atol = 1e-4 if model.dtype == torch.float32 else 3e-2
    scale = max(1.0, float(expected.abs().max()))
    if expected.shape != got.shape or not torch.allclose(got, expected, rtol=1e-3, atol=atol * scale):
        diff = (got - expected).abs().max().item() if expected.shape == got.shape else "shape"
        raise CheckpointError(
            f"the saved checkpoint reloads to a different model (max output difference {diff}); the config "
            f"disagrees with the weights, nothing was written"
        )
    logger.info("reload check passed: %s reproduces the model in memory", folder.name)
