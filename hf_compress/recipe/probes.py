"""Task probes of a sentence encoder's frozen, mean-pooled embeddings (no fine-tuning, nothing downloaded).

* ``topic_probe``: nearest-centroid accuracy of the 12 Wikipedia topics (held-out summaries; centroids from
  calibration summaries). The demo distils on Wikipedia text, so this one is in domain.
* ``snli_probe``: SentEval's recipe, a logistic regression on ``[u, v, |u - v|, u * v]`` of premise and
  hypothesis embeddings, trained on SNLI training pairs, accuracy on SNLI test pairs (3 classes).
* ``snli_ranking``: each test premise ranks the hypotheses of all entailment test pairs by cosine; mean
  reciprocal rank of its own hypothesis.
* ``docs_probe``: nearest-centroid accuracy of which section of the Python documentation (library, c-api,
  whatsnew, howto, tutorial, reference, faq) a paragraph comes from; test paragraphs come from the held-out
  files of the one held-out rule, centroids from the others (files are split, never paragraphs).

SNLI and the Python documentation are outside data: no shipped recipe distils on them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["topic_probe", "outside_probes", "linear_probe", "nearest_centroid", "ranking_mrr"]

DOCS_SECTIONS = ("library", "c-api", "whatsnew", "howto", "tutorial", "reference", "faq")


# ------------------------------------------------------------------------------------------ classifiers
def nearest_centroid(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor) -> float:
    """Accuracy of assigning each test row to the class whose normalised mean training row is closest in
    cosine. ``train_x`` (N, H), labels ``0..K-1`` (N,)."""
    k = int(train_y.max()) + 1
    centroids = F.normalize(torch.stack([train_x[train_y == c].mean(0) for c in range(k)]), dim=-1)  # (K, H)
    pred = (F.normalize(test_x, dim=-1) @ centroids.T).argmax(-1)
    return float((pred == test_y).float().mean())


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 l2: float = 1e-3, max_iter: int = 200) -> float:
    """Test accuracy of a multinomial logistic regression (standardised features, L2 penalty ``l2``) fitted
    by full-batch L-BFGS; deterministic."""
    with torch.inference_mode(False), torch.enable_grad():  # callers may measure under inference_mode
        train_x, test_x = train_x.clone(), test_x.clone()  # normal tensors: autograd may save them
        mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
        xs, xt = (train_x - mean) / std, (test_x - mean) / std
        k = int(train_y.max()) + 1
        weight = torch.zeros(xs.shape[1], k, requires_grad=True)
        bias = torch.zeros(k, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")
        target = train_y.clone()

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(xs @ weight + bias, target) + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            return float(((xt @ weight + bias).argmax(-1) == test_y).float().mean())


def ranking_mrr(queries: torch.Tensor, candidates: torch.Tensor) -> float:
    """Mean reciprocal rank of candidate ``i`` for query ``i`` among all candidates, by cosine. (N, H) each."""
    sims = F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).T  # (N, N)
    own = sims.diagonal().unsqueeze(1)
    ranks = (sims > own).sum(1) + 1
    return float((1.0 / ranks.float()).mean())


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class ProbeData:
    snli_train: tuple[list[str], list[str], list[int]]  # premises, hypotheses, labels
    snli_test: tuple[list[str], list[str], list[int]]
    docs_train: tuple[list[str], list[int]]
    docs_test: tuple[list[str], list[int]]


def _paragraphs(text: str) -> list[str]:
    keep = []
    for para in text.split("\n\n"):
        para = para.strip()
        if 200 <= len(para) <= 1500 and not para.startswith(("..", "===", "---", "***")):
            keep.append(para)
    return keep


def _docs_split(per_class: tuple[int, int]) -> tuple[tuple, tuple]:
    """Paragraphs per section: centroids from the calibration files, tests from the held-out files of the
    one held-out rule (``assets.heldout_split`` over the sorted files, as ``asset_texts("python-docs", ...)``),
    so a recipe that distils on the Python docs' calibration split never sees a test paragraph."""
    import glob

    from ..assets import get_asset, heldout_split

    root = Path(get_asset("python-docs"))
    files = sorted(glob.glob(str(root / "**" / "*.rst.txt"), recursive=True))
    train, test = ([], []), ([], [])
    for split, n, out in (("calibration", per_class[0], train), ("heldout", per_class[1], test)):
        chosen_files = heldout_split(files, split)
        for label, section in enumerate(DOCS_SECTIONS):
            prefix = str(root / section) + "/"
            paras = [p for f in chosen_files if f.startswith(prefix)
                     for p in _paragraphs(Path(f).read_text(encoding="utf-8", errors="replace"))]
            chosen = paras[:: max(1, len(paras) // n)][:n]
            out[0].extend(chosen)
            out[1].extend([label] * len(chosen))
    return train, test


@functools.lru_cache(maxsize=4)
def load_probe_data(n_snli_train: int = 1500, n_snli_test: int = 1000,
                    docs_per_class: tuple[int, int] = (48, 24)) -> ProbeData:
    """The probes' fixed selections (deterministic: strided, no random draw)."""
    from ..assets import load_snli

    def pairs(split: str, n: int):
        ds = load_snli(split)
        ds = ds.select(range(0, len(ds), max(1, len(ds) // n))).select(range(min(n, len(ds))))
        return list(ds["premise"]), list(ds["hypothesis"]), list(ds["label"])

    docs_train, docs_test = _docs_split(docs_per_class)
    return ProbeData(pairs("train", n_snli_train), pairs("test", n_snli_test), docs_train, docs_test)


# ---------------------------------------------------------------------------------------------- probes
@torch.inference_mode()
def embed(model, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 32) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings (N, H) of ``texts``, batched by length (order kept)."""
    from ..evaluation import mean_pooled

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [None] * len(texts)
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc="probe embeddings", leave=False):
        idx = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        for i, row in zip(idx, mean_pooled(model, {k: v.to(device) for k, v in batch.items()}).cpu()):
            out[i] = row
    return torch.stack(out)


def _pair_features(model, tokenizer, pairs, max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, v = embed(model, tokenizer, pairs[0], max_length), embed(model, tokenizer, pairs[1], max_length)
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1), u, v


def outside_probes(model, tokenizer, metrics, max_length: int = 128) -> dict[str, float]:
    """The asked ones of ``snli_probe``, ``snli_ranking``, ``docs_probe`` for ``model``: ``{metric: score}``."""
    data = load_probe_data()
    out = {}
    model.eval()
    if "snli_probe" in metrics or "snli_ranking" in metrics:
        xt, u, v = _pair_features(model, tokenizer, data.snli_test, max_length)
        yt = torch.tensor(data.snli_test[2])
        if "snli_probe" in metrics:
            xs, _, _ = _pair_features(model, tokenizer, data.snli_train, max_length)
            out["snli_probe"] = linear_probe(xs, torch.tensor(data.snli_train[2]), xt, yt)
        if "snli_ranking" in metrics:
            premises = data.snli_test[0]
            first = {}
            for i, label in enumerate(data.snli_test[2]):  # one entailment pair per premise
                if label == 0:
                    first.setdefault(premises[i], i)
            keep = torch.tensor(sorted(first.values()))
            out["snli_ranking"] = ranking_mrr(u[keep], v[keep])
    if "docs_probe" in metrics:
        xs, xt = (embed(model, tokenizer, split[0], max_length) for split in (data.docs_train, data.docs_test))
        out["docs_probe"] = nearest_centroid(xs, torch.tensor(data.docs_train[1]), xt, torch.tensor(data.docs_test[1]))
    return out


@torch.inference_mode()
def topic_probe(model, tokenizer, n_train: int = 480, n_test: int = 240, max_length: int = 128) -> float:
    """Nearest-centroid accuracy of the Wikipedia topics of held-out summaries (centroids: calibration
    summaries, the split of ``wiki_texts``)."""
    from ..assets import load_wiki_summaries

    train = load_wiki_summaries("calibration")[::7][:n_train]
    test = load_wiki_summaries("heldout")[:n_test]
    topics = sorted({r["topic"] for r in train})

    def encode(items):
        return embed(model, tokenizer, [r["extract"] for r in items], max_length, batch_size=16)

    labels = [torch.tensor([topics.index(r["topic"]) if r["topic"] in topics else -1 for r in items])
              for items in (train, test)]  # a test topic without training texts counts as wrong
    return nearest_centroid(encode(train), labels[0], encode(test), labels[1])
