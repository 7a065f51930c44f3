"""One held-out rule (every 10th text) for every reader of a corpus: the topic probe measures on exactly the
summaries that ``wiki_texts("heldout")`` holds out, and fits its centroids on none of them."""

from __future__ import annotations

import json

import torch

from hf_compress import assets, evaluation
from hf_compress.recipe import measure, probes

TOPICS = ("People", "Biology", "Geography")


def _fake_wiki(tmp_path, monkeypatch, n=300, empty=(3, 17, 41)):
    rows = {str(i): {"title": f"t{i}", "extract": "" if i in empty else f"summary {i}",
                     "topic": TOPICS[i % 3]} for i in range(n)}
    (tmp_path / "summaries_en-us.json").write_text(json.dumps(rows))
    monkeypatch.setattr(assets, "_asset_path", lambda name: tmp_path)
    return rows


def test_topic_probe_splits_the_summaries_like_wiki_texts(tmp_path, monkeypatch):
    rows = _fake_wiki(tmp_path, monkeypatch)
    topic = {r["extract"]: TOPICS.index(r["topic"]) for r in rows.values()}
    embedded: list[list[str]] = []

    def fake_embed(model, tokenizer, texts, max_length=128, batch_size=32):
        embedded.append(list(texts))
        return torch.nn.functional.one_hot(torch.tensor([topic[t] for t in texts]), len(TOPICS)).float()

    monkeypatch.setattr(probes, "embed", fake_embed)
    acc = probes.topic_probe(model=None, tokenizer=None, n_train=1000, n_test=1000)
    centroid_texts, test_texts = embedded
    heldout = evaluation.wiki_texts("heldout")
    assert test_texts == heldout
    assert not set(centroid_texts) & set(heldout)
    assert set(centroid_texts) <= set(evaluation.wiki_texts("calibration"))
    assert acc == 1.0  # one-hot embeddings of the topic: a probe that cannot miss


def test_wiki_texts_and_file_data_use_the_same_rule(tmp_path, monkeypatch):
    _fake_wiki(tmp_path, monkeypatch, n=25, empty=())
    assert evaluation.wiki_texts("heldout") == ["summary 0", "summary 10", "summary 20"]
    assert assets.heldout_split(list(range(25)), "heldout") == [0, 10, 20]
    assert len(evaluation.wiki_texts("calibration")) == 22
