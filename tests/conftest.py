import os

# Before transformers is imported anywhere: tests never reach the Hugging Face Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from tiny_models import tiny_batch, tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def bert_mlm():
    return tiny_model("bert", "masked-lm")


@pytest.fixture
def bert_cls():
    return tiny_model("bert", "sequence-classification", num_labels=3)


@pytest.fixture
def gpt2_lm():
    return tiny_model("gpt2")


@pytest.fixture
def llama_lm():
    return tiny_model("llama")


@pytest.fixture
def batch():
    return tiny_batch()
