"""Data and evaluation of scripts/bench_snli.py: SNLI pairs (or the --tiny synthetic ones), tokenization,
fp32 test predictions, stored beside a cached model folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding


def tiny_setup(settings, n_train: int):
    """Synthetic entailment pairs, a word-level tokenizer and a 4-layer hidden-32 BERT; nothing downloaded."""
    import datasets
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, PreTrainedTokenizerFast

    nouns, verbs = ["dog", "cat", "man", "woman", "child", "bird"], ["runs", "sleeps", "eats", "sings"]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + ["the", "not", "a"] + nouns + verbs)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    g = torch.Generator().manual_seed(settings.seed)

    def pairs(n):
        rows = {"premise": [], "hypothesis": [], "label": []}
        for i in range(n):
            a, b = torch.randint(len(nouns), (2,), generator=g).tolist()
            v = verbs[int(torch.randint(len(verbs), (1,), generator=g))]
            label = i % 3
            other = nouns[(a + 1 + b % 5) % 6]
            hyp = [f"the {nouns[a]} {v}", f"a {other} {v}", f"the {nouns[a]} not {v}"][label]
            rows["premise"].append(f"the {nouns[a]} {v}")
            rows["hypothesis"].append(hyp)
            rows["label"].append(label)
        return datasets.Dataset.from_dict(rows)

    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)

    def init_teacher():
        torch.manual_seed(settings.seed)
        return AutoModelForSequenceClassification.from_config(config)

    return pairs(n_train), pairs(settings.test_size or 48), tokenizer, init_teacher, "tiny-bert"


def snli_setup(settings, n_train: int):
    """The first ``n_train`` pairs of the shuffled SNLI training subset (a prefix of the same permutation for
    every ``n_train``, so the teacher's pairs are the first students' pairs), the test set, MiniLM."""
    from hf_compress.assets import get_asset, load_snli

    folder = get_asset("minilm")
    full = load_snli("train")
    if n_train > len(full):
        raise SystemExit(f"`student_pairs` / `train_size` must be <= {len(full)} (the bundled SNLI training "
                         f"subset), got {n_train}")
    train = full.shuffle(seed=settings.seed).select(range(n_train))
    test = load_snli("test")
    if settings.test_size is not None:
        test = test.shuffle(seed=settings.seed).select(range(min(settings.test_size, len(test))))
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def init_teacher():
        torch.manual_seed(settings.seed)
        return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)

    return train, test, tokenizer, init_teacher, "all-MiniLM-L6-v2"


def tokenize(ds, tokenizer, max_length: int):
    """premise/hypothesis pairs -> input_ids, token_type_ids, attention_mask, label (padded per batch)."""
    def enc(batch):
        return tokenizer(list(batch["premise"]), list(batch["hypothesis"]), truncation=True,
                         max_length=max_length)

    return ds.map(enc, batched=True, remove_columns=["premise", "hypothesis"], desc="tokenize")


@torch.no_grad()
def predict(model, test_tok, tokenizer, batch_size: int = 128) -> list[int]:
    """Argmax labels over the test set in fp32, batches of similar length (order restored)."""
    model.eval()
    order = sorted(range(len(test_tok)), key=lambda i: len(test_tok[i]["input_ids"]))
    collate = DataCollatorWithPadding(tokenizer)
    preds = [0] * len(order)
    cols = [c for c in test_tok.column_names if c != "label"]
    for start in tqdm(range(0, len(order), batch_size), desc="predict", leave=False):
        idx = order[start:start + batch_size]
        batch = collate([{c: test_tok[i][c] for c in cols} for i in idx])
        for i, p in zip(idx, model(**batch).logits.argmax(-1).tolist()):
            preds[i] = p
    return preds


def stored_predictions(model, folder: Path, settings, test_tok, tokenizer) -> list[int]:
    """Test predictions of ``model``, stored in ``folder/test_predictions.json`` per test selection (minutes on
    CPU for the teacher), so a rerun of the table does not predict again; the paired comparisons need them."""
    path = Path(folder) / "test_predictions.json"
    key = (f"test_size={settings.test_size},seed={settings.seed},max_length={settings.max_length},"
           f"n={len(test_tok)}")
    known = json.loads(path.read_text()) if path.exists() else {}
    if key not in known:
        known[key] = predict(model, test_tok, tokenizer)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, path)
    return known[key]
