"""hf_compress.tasks is the one task table: every reader agrees with it, and no other module spells an Auto
class or a pipeline tag of its own."""

from __future__ import annotations

import re

import pytest
import transformers

import hf_compress
from hf_compress import tasks
from hf_compress.errors import CheckpointError, HfCompressError
from hf_compress.recipe.schema import TASKS as SCHEMA_TASKS
from tiny_models import tiny_model

PACKAGE = hf_compress.__file__.rpartition("/")[0]


@pytest.mark.parametrize("task", tasks.TASKS.values(), ids=lambda t: t.name)
def test_every_row_names_a_real_auto_class_and_table(task):
    from transformers.models.auto import modeling_auto

    assert hasattr(transformers, task.auto_class)
    assert getattr(modeling_auto, task.mapping)


@pytest.mark.parametrize("model_type,head", [("bert", "masked-lm"), ("llama", "causal-lm"),
                                             ("gpt2", "causal-lm")])
def test_head_of_a_tiny_model_and_back_to_its_auto_class(model_type, head):
    model = tiny_model(model_type)
    assert tasks.head_of(model) == head
    assert type(model).__name__ in tasks._class_names(tasks.task_of_head(head).mapping)


def test_base_models_and_classifiers_have_their_heads():
    assert tasks.head_of(tiny_model("bert", task="base")) == "base"
    assert tasks.head_of(tiny_model("bert", task="sequence-classification")) == "sequence-classification"


def test_recipe_tasks_are_the_table_rows_marked_for_recipes():
    assert SCHEMA_TASKS == tasks.RECIPE_TASKS == ("feature-extraction", "fill-mask", "causal-lm",
                                                  "text-classification")
    assert tasks.get_task("causal-lm").pipeline_tag == "text-generation"


def test_unknown_task_names_the_allowed_ones_with_the_callers_error():
    with pytest.raises(CheckpointError, match=r"`task` must be one of feature-extraction, .*got 'summarize'"):
        tasks.auto_class("summarize", CheckpointError)
    with pytest.raises(HfCompressError, match="head must be one of"):
        tasks.task_of_head("seq2seq")


def test_no_other_module_names_an_auto_class_or_a_pipeline_tag():
    """The old copies (io/checkpoint AUTO_CLASSES, io/model_card PIPELINE_TAGS and _usage, the teacher's
    TASKS) are gone; remote_code ships inside model folders and must stand alone."""
    from pathlib import Path

    pattern = re.compile(r"[\"'](AutoModel\w*|text-generation)[\"']|\bAutoModelFor\w+\.")
    hits = []
    for path in Path(PACKAGE).rglob("*.py"):
        if path.name == "tasks.py" or "remote_code" in path.parts:
            continue
        hits += [f"{path.name}: {m.group(0)}" for m in pattern.finditer(path.read_text())]
    assert hits == []
