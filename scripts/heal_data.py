"""Data and models of ``scripts/bench_heal.py``: the two corpora, their splits, training blocks, and the
``--tiny`` setup (a word-level tokenizer and a small Llama pre-trained for seconds on two synthetic domains).

Splits never overlap: both corpora use the package's one held-out rule (``hf_compress.assets.asset_texts``:
every 10th summary, every 10th documentation file sorted by path). Training blocks alternate between the two
corpora, so both arms of the benchmark (distillation, plain fine-tuning) see the very same tokens.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_compress.evaluation import texts_for_tokens



@dataclass
class Corpora:
    train: dict[str, list[str]]  # corpus name -> training texts (shuffled)
    heldout: dict[str, list[str]]  # corpus name -> held-out texts (never trained on)


def real_corpora(seed: int) -> Corpora:
    """Wikipedia summaries and the Python 3.11 documentation, split by the one held-out rule
    (``asset_texts``: every 10th summary / file held out); training texts shuffled with ``seed``."""
    from hf_compress.assets import asset_texts

    names = {"wiki": "wiki-summaries", "python docs": "python-docs"}
    train = {k: asset_texts(v, "calibration") for k, v in names.items()}
    for texts in train.values():
        random.Random(seed).shuffle(texts)
    return Corpora(train=train, heldout={k: asset_texts(v, "heldout") for k, v in names.items()})


def _ids(tokenizer, text: str) -> torch.Tensor:
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]


def training_blocks(tokenizer, corpora: Corpora, n_blocks: int, seq_len: int) -> torch.Tensor:
    """``n_blocks`` rows of ``seq_len`` token ids, alternating corpus by corpus (each corpus's texts joined
    with the EOS token and cut into consecutive blocks). Shape ``(n_blocks, seq_len)``."""
    names = list(corpora.train)
    per = -(-n_blocks // len(names))
    eos = tokenizer.eos_token or "\n\n"
    cut = []
    for name in names:
        ids = _ids(tokenizer, eos.join(texts_for_tokens(corpora.train[name], per * seq_len)))
        if ids.numel() < per * seq_len:  # denser text than texts_for_tokens assumes: take the whole corpus
            ids = _ids(tokenizer, eos.join(corpora.train[name]))
        if ids.numel() < per * seq_len:
            raise ValueError(f"corpus {name!r} gives {ids.numel()} training tokens, fewer than the "
                             f"{per * seq_len} asked; lower `steps`, `batch_size` or `seq_len`")
        cut.append(ids[: per * seq_len].view(per, seq_len))  # (per, T)
    blocks = torch.stack(cut, dim=1).reshape(-1, seq_len)  # interleaved: corpus 0, corpus 1, corpus 0, ...
    return blocks[:n_blocks]


# ----------------------------------------------------------------------------------------------- tiny
_NOUNS = ["river", "city", "king", "planet", "forest", "bird", "ship", "music"]
_VERBS = ["crosses", "rules", "orbits", "covers", "sings", "carries", "fills", "meets"]
_NAMES = ["parse", "load", "merge", "split", "sort", "fetch"]
_OPS = ["+", "-", "*"]


def _tiny_texts(n: int, seed: int) -> dict[str, list[str]]:
    g = random.Random(seed)
    prose, code = [], []
    for _ in range(n):
        a, b = g.randrange(8), g.randrange(8)
        prose.append(f"the {_NOUNS[a]} {_VERBS[a]} the {_NOUNS[b]} . the {_NOUNS[b]} {_VERBS[b]} the "
                     f"{_NOUNS[a]} .")
        f, op, k = g.choice(_NAMES), g.randrange(3), g.randrange(10)
        code.append(f"def {f} ( x ) : return x {_OPS[op]} {k} ; {f} ( {k} ) = x {_OPS[op]} {k}")
    return {"wiki": prose, "python docs": code}


def tiny_tokenizer():
    """A word-level tokenizer over the tiny domains' words and digits (built in process, nothing read)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "</s>", "the", ".", "def", "(", ")", ":", "return", "x", ";", "=", *_OPS]
    words += _NOUNS + _VERBS + _NAMES + [str(i) for i in range(10)]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")


def run_blocks(tokenizer, corpora: Corpora, s) -> tuple[torch.Tensor, torch.Tensor]:
    """(training blocks, quantization-calibration blocks) of one run's budget ``s``: the very blocks a kept
    teacher cache (``--cache-only``) was written for, so its fingerprint matches the run that reads it."""
    n_train = s.steps * s.batch_size
    blocks = training_blocks(tokenizer, corpora, n_train + s.quant_batches * s.batch_size, s.seq_len)
    return blocks[:n_train], blocks[n_train:]


def tiny_setup(seed: int, pretrain_steps: int = 60):
    """(teacher, tokenizer, corpora): an 8-layer hidden-64 Llama trained ``pretrain_steps`` AdamW steps on the
    tiny domains, so that pruning it costs perplexity that healing can win back."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    train, heldout = _tiny_texts(600, seed), _tiny_texts(60, seed + 1)
    corpora = Corpora(train=train, heldout=heldout)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=8, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, intermediate_size=128, max_position_embeddings=128,
                         bos_token_id=2, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(seed)
    teacher = LlamaForCausalLM(config)
    blocks = training_blocks(tokenizer, corpora, 16 * 4, 32)
    opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    teacher.train()
    for step in range(pretrain_steps):
        batch = blocks[(step % 4) * 16 : (step % 4 + 1) * 16]
        loss = teacher(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return teacher.eval(), tokenizer, corpora


def setup(s, tiny: bool):
    """The teacher (SmolLM2-135M from the bundled assets, or the tiny Llama), its tokenizer, the corpora, a name."""
    if tiny:
        teacher, tokenizer, corpora = tiny_setup(s.seed)
        return teacher, tokenizer, corpora, "tiny Llama (8 layers, hidden 64)"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_compress import get_asset

    folder = get_asset("smollm2")
    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return teacher, AutoTokenizer.from_pretrained(folder), real_corpora(s.seed), "SmolLM2-135M-Instruct"


COST_FILE = "bench_heal_cache_cost.json"


def cache_teacher(teacher, tokenizer, s, blocks: torch.Tensor, folder: Path) -> dict:
    """The teacher's top-k logits over the training blocks, written once to ``folder`` (shared by every
    compression: the blocks are the same); its cost is reported beside the distillation rows."""
    import datasets

    from hf_compress import cache_teacher_outputs
    from hf_compress.distillation.cache_format import META_FILE

    record = Path(folder) / COST_FILE  # what writing it cost, for the runs that reuse a kept cache
    kept = record.exists()
    meta = Path(folder) / META_FILE
    before = meta.stat().st_mtime_ns if meta.exists() else None  # unchanged after: the kept cache matched
    wall, cpu = time.perf_counter(), time.process_time()
    cache_teacher_outputs(teacher, datasets.Dataset.from_dict({"input_ids": blocks.tolist()}), str(folder),
                          top_k=s.top_k, max_length=s.seq_len, batch_size=s.batch_size, tokenizer=tokenizer)
    cost = {"cache_wall_s": time.perf_counter() - wall, "cache_cpu_s": time.process_time() - cpu,
            "threads": torch.get_num_threads()}
    if kept:  # reused (its fingerprint matched): report what writing it cost, not the check
        return {**json.loads(record.read_text(encoding="utf-8")), "reused": True}
    if before is not None and meta.stat().st_mtime_ns == before:  # kept from before the record: cost unknown
        return {"reused": True, "unknown": True}
    record.write_text(json.dumps(cost), encoding="utf-8")
    return cost
