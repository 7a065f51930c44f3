"""The recipe's quantize_int8 stage passes the int8 kernel options through to Int8Config."""

from hf_compress.recipe.configs import QuantizeInt8Config


def test_compile_and_fuse_reach_the_int8_config():
    default = QuantizeInt8Config().part_config()
    assert (default.compile, default.fuse) == (False, True)
    chosen = QuantizeInt8Config(mode="w8a8", compile=True, fuse=False).part_config()
    assert (chosen.compile, chosen.fuse) == (True, False)
