"""Tiny distillation pairs shared by the tests in tests/distillation: teacher/student pairs of four kinds,
datasets with uneven row lengths, DistillationArguments defaults, a gradient capture."""

import torch
from datasets import Dataset
from tiny_models import tiny_model
from transformers import TrainerCallback

from hf_compress import DistillationArguments

NO_DROPOUT = {
    "bert": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "gpt2": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "llama": {},
}
KINDS = {  # kind -> (model_type, task, extra config)
    "bert-mlm": ("bert", "masked-lm", {}),
    "bert-cls": ("bert", "sequence-classification", {"num_labels": 3}),
    "gpt2": ("gpt2", "causal-lm", {}),
    "llama": ("llama", "causal-lm", {}),
}
SMALL = {"bert": {"num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32},
         "gpt2": {"n_layer": 2, "n_embd": 16, "n_head": 2},
         "llama": {"num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
                       "head_dim": 8, "intermediate_size": 32}}


def make_models(kind, dropout=False):
    model_type, task, extra = KINDS[kind]
    overrides = {**extra, **({} if dropout else NO_DROPOUT[model_type])}
    teacher = tiny_model(model_type, task, seed=1, **overrides)
    student = tiny_model(model_type, task, seed=2, **overrides, **SMALL[model_type])
    return teacher, student


def make_dataset(kind, n=8, seq=12, seed=0):
    """Rows of different lengths (right padding), so micro-batches hold different numbers of valid tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 100, (n, seq), generator=g)
    lengths = torch.tensor([seq, 3, 7, seq, 4, 11, 5, 9] * (n // 8 + 1))[:n]
    attn = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = ids.masked_fill(attn == 0, 0)
    data = {"input_ids": ids.tolist(), "attention_mask": attn.tolist()}
    if kind == "bert-cls":
        data["labels"] = torch.randint(0, 3, (n,), generator=g).tolist()
    elif kind == "bert-mlm":
        keep = (torch.rand(n, seq, generator=g) < 0.4) & attn.bool()
        data["labels"] = ids.masked_fill(~keep, -100).tolist()
    else:
        labels = ids.masked_fill(attn == 0, -100)
        labels[:, :2] = -100
        data["labels"] = labels.tolist()
    return Dataset.from_dict(data)


def make_args(tmp_path, **kw):
    base = {"output_dir": str(tmp_path / "out"), "report_to": "none", "use_cpu": True, "disable_tqdm": True,
                "save_strategy": "no", "train_sampling_strategy": "sequential", "learning_rate": 1e-2, "seed": 0,
                "alpha_logits": 1.0, "alpha_hidden": 0.5, "alpha_task": 0.3, "temperature": 2.0, "logging_steps": 1}
    base.update(kw)
    return DistillationArguments(**base)


class GradCapture(TrainerCallback):
    def __init__(self, trainer):
        self.trainer, self.grads = trainer, []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        projections = self.trainer.projections
        named = list(model.named_parameters()) + ([] if projections is None else
                                                  [(f"proj.{n}", p) for n, p in projections.named_parameters()])
        self.grads.append({n: p.grad.detach().clone() for n, p in named if p.grad is not None})


def full_batch(ds):
    return {k: torch.tensor(ds[k]) for k in ds.column_names}


def word_tokenizer(n: int, prefix: str = "w"):
    """A word-level fast tokenizer of ``n`` tokens ``{prefix}0 .. {prefix}{n-1}`` (id = index, pad = 0)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {f"{prefix}{i}": i for i in range(n)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token=f"{prefix}1")),
                                   pad_token=f"{prefix}0")


def naive_divergence(kind: str, p_s: list, p_t: list, tau: float, beta: float = 0.5) -> float:
    """tau^2 x forward KL / reverse KL / generalized JSD of two probability lists, float64 loops."""
    import math

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)

    if kind == "forward_kl":
        return tau**2 * kl(p_t, p_s)
    if kind == "reverse_kl":
        return tau**2 * kl(p_s, p_t)
    m = [beta * a + (1 - beta) * b for a, b in zip(p_t, p_s)]
    return tau**2 * (beta * kl(p_t, m) + (1 - beta) * kl(p_s, m))
