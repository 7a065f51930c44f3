"""The recipe's quantize_int8 stage passes the int8 kernel options through to Int8Config."""

from hf_compress.methods.int8.config import QuantizeInt8Config


def test_compile_and_fuse_reach_the_int8_config():
    default = QuantizeInt8Config().part_config()
    assert (default.compile, default.fuse) == (False, True)
    chosen = QuantizeInt8Config(mode="w8a8", compile=True, fuse=False).part_config()
    assert (chosen.compile, chosen.fuse) == (True, False)


def test_every_shared_field_reaches_the_parts_config_as_a_copy():
    from dataclasses import fields

    from hf_compress.methods.heads.config import PruneHeadsConfig
    from hf_compress.methods.sparsity.config import SparsifyConfig

    stages = [PruneHeadsConfig(fraction=0.5, uniform=False, export="masked", normalize=False),
              SparsifyConfig(sparsity=0.3, method="magnitude", scope="per_layer", ignore=["lm_head", "x"]),
              QuantizeInt8Config(mode="w8a16", ignore=["re:.*q_proj"], gptq_damp=0.05, compile=True)]
    for stage in stages:
        part = stage.part_config()
        shared = {f.name for f in fields(part)} & {f.name for f in fields(stage)}
        direct = type(part)(**{n: getattr(stage, n) for n in shared})  # the part config built by hand
        assert shared and all(getattr(part, n) == getattr(direct, n) for n in shared), type(stage).__name__
        assert any(getattr(stage, n) != getattr(type(stage)(), n) for n in shared)  # non-defaults were passed
        if "ignore" in shared:
            assert part.ignore is not stage.ignore
