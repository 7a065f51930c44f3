"""The root exports every config class a public function takes and every error class, lazily."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import hf_compress
from hf_compress import errors


def _public_functions():
    for name in hf_compress.__all__:
        value = getattr(hf_compress, name)
        if inspect.isfunction(value):
            yield name, value
        elif inspect.isclass(value) and "__init__" in vars(value):
            yield name, value.__init__


def test_every_config_class_a_public_function_takes_is_exported():
    missing = {}
    for name, fn in _public_functions():
        for param in inspect.signature(fn).parameters.values():
            annotation = param.annotation if isinstance(param.annotation, str) else getattr(
                param.annotation, "__name__", "")
            for cls in re.findall(r"\b([A-Z]\w*Config|Recipe)\b", annotation):
                if cls not in hf_compress.__all__:
                    missing.setdefault(cls, []).append(f"{name}({param.name})")
    assert missing == {}


def test_every_error_class_is_exported():
    assert set(errors.__all__) <= set(hf_compress.__all__)
    assert hf_compress.QuantizationError is errors.QuantizationError


def test_the_three_method_configs_and_recipe_come_from_their_light_modules():
    from hf_compress.methods.heads.config import HeadPruningConfig
    from hf_compress.methods.int8.config import Int8Config
    from hf_compress.methods.sparsity.config import SparsityConfig

    assert hf_compress.Int8Config is Int8Config and hf_compress.SparsityConfig is SparsityConfig
    assert hf_compress.HeadPruningConfig is HeadPruningConfig


def test_import_is_lazy():
    code = ("import sys, hf_compress; hf_compress.Int8Config; hf_compress.QuantizationError; "
            "print('torch' in sys.modules, 'hf_compress.methods.int8.quantize' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
