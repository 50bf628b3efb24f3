"""--cache: the base's bases kept between runs; later runs read them back and write the same bytes."""

import pytest

from casa_core import cli
from casa_core.errors import CasaError
from casa_core.spectral_cache import SUFFIX, SpectralCache
from tests.core import factories as fx


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache-in")
    t = fx.model_tensors(3, blocks=1)       # square, tall (ffn.0, text_embedding) and wide (ffn.2) layers
    return {"base": fx.write_model(t, d / "base.safetensors"),
            "target": fx.write_model(fx.drifted(t, 4), d / "target.safetensors"),
            "lora": fx.write_lora(fx.lora_factors(t, 5), d / "lora.safetensors")}


def _convert(inputs, out, *args):
    assert cli.main(["convert", "--base", str(inputs["base"]), "--target", str(inputs["target"]), "--lora",
                     str(inputs["lora"]), "--device", "cpu", "--output", str(out), *args]) == 0
    return out.read_bytes()


@pytest.mark.parametrize("precision", ["auto", "float64"])
def test_cached_bases_give_the_same_bytes(inputs, tmp_path, precision, capsys):
    plain = _convert(inputs, tmp_path / "plain.safetensors", "-q", "--precision", precision)
    cache = tmp_path / "cache"
    first = _convert(inputs, tmp_path / "first.safetensors", "--cache", str(cache), "--precision", precision)
    c = SpectralCache.open(cache, 20.0)
    layers = c.stored
    assert layers > 5 and c.hits == 0 and c.size()[0] == layers
    assert f"{layers} bases" in capsys.readouterr().err
    second = _convert(inputs, tmp_path / "second.safetensors", "--cache", str(cache), "--precision", precision)
    assert c.hits == layers and c.stored == layers      # every basis read back, none decomposed again
    assert plain == first == second
    # a damaged entry is decomposed again, never trusted
    entry = next(cache.glob(f"*{SUFFIX}"))
    entry.write_bytes(entry.read_bytes()[:100])
    assert _convert(inputs, tmp_path / "third.safetensors", "-q", "--cache", str(cache), "--precision",
                    precision) == plain
    assert c.stored == layers + 1


def test_the_cache_keeps_to_its_size_limit(inputs, tmp_path):
    cache = tmp_path / "small"
    limit_gb = 20e-6                                        # 20 kB: a few of the tiny model's bases
    _convert(inputs, tmp_path / "out.safetensors", "-q", "--cache", str(cache), "--cache-limit", str(limit_gb))
    n, size = SpectralCache.open(cache, limit_gb).size()
    assert 0 < n < SpectralCache.open(cache, limit_gb).stored and size <= 20_000
    with pytest.raises(CasaError, match="positive"):
        SpectralCache.open(tmp_path / "x", 0)


def test_a_batch_reads_the_cache_a_conversion_filled(inputs, tmp_path):
    cache = tmp_path / "cache"
    single = _convert(inputs, tmp_path / "single.safetensors", "-q", "--cache", str(cache))
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["batch", "--base", str(inputs["base"]), "--target", str(inputs["target"]), "--lora",
                     str(inputs["lora"]), "--output-dir", str(out), "--device", "cpu", "-q",
                     "--cache", str(cache)]) == 0
    c = SpectralCache.open(cache, 20.0)
    assert c.hits == c.stored > 0
    assert (out / "lora-target.safetensors").read_bytes() == single
