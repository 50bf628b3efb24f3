"""Hostile and broken inputs (issue 11, classes 3-8): one line each, nothing written, inputs unchanged.

Every case is built in a temporary folder from small tensors and run through the real CLI
(``casa_core.cli.main``): it must end with exit status 2 and exactly one ``casa: error:``
line that names the key or file at fault, with no traceback, no progress line before it
(refused before the heavy work), no output file, and the inputs unchanged. The builders
(``CASES``) are plain functions of a folder, so the same inputs can be run against older code.
Classes 1, 2 and the rest of 8 are in test_outputs.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import constants
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from casa_core import cli, dtypes
from casa_core.families import wan
from casa_core.sources import pickled
from casa_core.tensorstore import MAX_HEADER, TensorStore
from tests.core import factories as f

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
REPO = "someone/loras"


# ---- building hostile inputs ------------------------------------------------------------

def make_models(tmp: Path) -> SimpleNamespace:
    """A tiny Wan base and target (safetensors files) and the model's tensors."""
    t = f.model_tensors(0)
    base = f.write_model(t, tmp / "models" / "base.safetensors")
    target = f.write_model(f.drifted(t, 5), tmp / "models" / "target.safetensors")
    return SimpleNamespace(t=t, base=base, target=target)


def lora_tensors(t, *, alpha: float | None = 4.0, prefix: str = "diffusion_model.", modules=None) -> dict:
    """A plain ComfyUI-named LoRA (rank 4) for the model's linears."""
    out = {}
    for m, (B, A) in f.lora_factors(t, 1, rank=4, modules=modules).items():
        out[f"{prefix}{m}.lora_A.weight"] = A.contiguous()
        out[f"{prefix}{m}.lora_B.weight"] = B.contiguous()
        if alpha is not None:
            out[f"{prefix}{m}.alpha"] = torch.tensor(alpha)
    return out


def st_bytes(tensors: dict, meta: dict | None = None, mutate=None, dump=json.dumps) -> bytes:
    """A safetensors file's bytes, its header open to ``mutate(header)`` and written by ``dump``."""
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b""
        header[k] = {"dtype": dtypes.tag(v.dtype), "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta is not None:
        header["__metadata__"] = meta
    if mutate is not None:
        mutate(header)
    h = dump(header).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(blobs)


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@dataclass
class Case:
    argv: list[str]                       # the CLI's arguments
    words: tuple[str, ...] = ()           # what the error line must name
    hf_home: Path | None = None           # a hub cache (HF_HOME) used offline
    cwd: Path | None = None
    inputs: list[Path] = field(default_factory=list)
    output: Path | None = None


def convert(m, lora, tmp: Path, *extra, base=None, target=None) -> Case:
    out = tmp / "out" / "converted.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    base, target = base or m.base, target or m.target
    return Case(["convert", "--base", str(base), "--target", str(target), "--lora", str(lora), "--output", str(out),
                 "--device", "cpu", "--method", "direct", *extra], inputs=[Path(base), Path(target), Path(lora)],
                output=out)


def q_factors(t):
    B, A = f.lora_factors(t, 2, rank=4, modules=["blocks.0.self_attn.q"])["blocks.0.self_attn.q"]
    return B, A


# class 3: a layer given twice

def c3_comfy_and_kohya(tmp, m):
    B, A = q_factors(m.t)
    extra = {"lora_unet_blocks_0_self_attn_q.lora_down.weight": A, "lora_unet_blocks_0_self_attn_q.lora_up.weight": B}
    lora = put(tmp / "twice.safetensors", st_bytes(lora_tensors(m.t) | extra))
    c = convert(m, lora, tmp)
    c.words = ("given twice", "diffusion_model.blocks.0.self_attn.q.lora_A.weight",
               "lora_unet_blocks_0_self_attn_q.lora_down.weight")
    return c


def c3_comfy_and_diffusers(tmp, m):
    B, A = q_factors(m.t)
    extra = {"transformer.blocks.0.attn1.to_q.lora_A.weight": A, "transformer.blocks.0.attn1.to_q.lora_B.weight": B}
    lora = put(tmp / "twice.safetensors", st_bytes(lora_tensors(m.t, alpha=None) | extra))
    c = convert(m, lora, tmp)
    c.words = ("given twice", "diffusion_model.blocks.0.self_attn.q.lora_A.weight",
               "transformer.blocks.0.attn1.to_q.lora_A.weight")
    return c


def c3_one_prefix_two_namings(tmp, m):
    B, A = q_factors(m.t)
    pre = "diffusion_model.blocks.0.self_attn.q"
    extra = {f"{pre}.lora_down.weight": A, f"{pre}.lora_up.weight": B}
    lora = put(tmp / "twice.safetensors", st_bytes(lora_tensors(m.t) | extra))
    c = convert(m, lora, tmp)
    c.words = ("given twice", f"{pre}.lora_A.weight", f"{pre}.lora_down.weight")
    return c


def c3_lora_and_loha(tmp, m):
    pre = "diffusion_model.blocks.0.self_attn.q"
    g = torch.Generator().manual_seed(3)
    loha = {f"{pre}.hada_w1_a": torch.randn(32, 2, generator=g), f"{pre}.hada_w1_b": torch.randn(2, 32, generator=g),
            f"{pre}.hada_w2_a": torch.randn(32, 2, generator=g), f"{pre}.hada_w2_b": torch.randn(2, 32, generator=g)}
    lora = put(tmp / "twice.safetensors", st_bytes(lora_tensors(m.t) | loha))
    c = convert(m, lora, tmp)
    c.words = ("given twice", f"{pre}.lora_A.weight", f"{pre}.hada_w1_a")
    return c


# class 4: pickled checkpoints

def shorten_record(src: Path, dst: Path, which: int = 0) -> Path:
    """A copy of a torch checkpoint whose ``which``-th storage record is cut to half its length."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        data = sorted((i for i in zin.infolist() if "/data/" in i.filename and i.filename.rsplit("/", 1)[1].isdigit()),
                      key=lambda i: int(i.filename.rsplit("/", 1)[1]))
        cut = data[which].filename
        for info in zin.infolist():
            blob = zin.read(info.filename)
            zout.writestr(info, blob[: len(blob) // 2] if info.filename == cut else blob)
    return dst


def c4_short_record_in_model(tmp, m):
    full = tmp / "full" / "base.pt"
    full.parent.mkdir(parents=True)
    torch.save({k: v.contiguous() for k, v in m.t.items()}, full)
    base = shorten_record(full, tmp / "models" / "base-short.pt")
    lora = put(tmp / "lora.safetensors", st_bytes(lora_tensors(m.t)))
    c = convert(m, lora, tmp, base=base)
    c.words = ("base-short.pt", "storage", "record")
    return c


def c4_short_record_in_lora(tmp, m):
    full = tmp / "full" / "lora.pt"
    full.parent.mkdir(parents=True)
    torch.save(lora_tensors(m.t), full)
    lora = shorten_record(full, tmp / "lora-short.pt", which=1)
    c = convert(m, lora, tmp)
    c.words = ("lora-short.pt", "storage", "record")
    return c


# class 5: hub ids and the cache

def hub_cache(tmp, m, files: dict | None = None, ref: str | None = SHA) -> tuple[Path, Path]:
    """HF_HOME with REPO cached as huggingface_hub lays it out (snapshot links to blobs); (home, repo dir)."""
    home = tmp / "home"
    repo = home / "hub" / ("models--" + REPO.replace("/", "--"))
    files = files if files is not None else {"lora.safetensors": st_bytes(lora_tensors(m.t))}
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        put(blob, data)
        link = repo / "snapshots" / SHA / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        put(repo / "refs" / "main", ref.encode())
    return home, repo


def hub_case(tmp, m, spec: str, *words, **cache) -> Case:
    home, repo = hub_cache(tmp, m, **cache)
    c = convert(m, spec, tmp)
    c.argv[c.argv.index("--lora") + 1] = spec
    c.inputs = [m.base, m.target, *sorted(p for p in repo.rglob("*") if p.is_file())]
    c.hf_home, c.words = home, words
    return c


def c5_revision_climbs(tmp, m):
    return hub_case(tmp, m, f"hf://{REPO}@../refs/main", "revision", "climbs out")


def c5_subfolder_climbs(tmp, m):
    other = tmp / "home" / "hub" / "models--other--repo" / "snapshots" / SHA / "lora.safetensors"
    put(other, st_bytes(lora_tensors(m.t)))
    return hub_case(tmp, m, f"hf://{REPO}:../../../models--other--repo/snapshots/{SHA}/lora.safetensors",
                    "subfolder", "climbs out")


def c5_subfolder_absolute(tmp, m):
    return hub_case(tmp, m, f"hf://{REPO}:/lora.safetensors", "subfolder", "climbs out")


def c5_ref_is_no_commit(tmp, m):
    other = tmp / "home" / "hub" / "models--other--repo" / "snapshots" / SHA / "lora.safetensors"
    put(other, st_bytes(lora_tensors(m.t)))
    return hub_case(tmp, m, f"hf://{REPO}", "refs", "not a commit hash",
                    ref=f"../../models--other--repo/snapshots/{SHA}")


def c5_link_out_of_the_cache(tmp, m):
    outside = put(tmp / "elsewhere" / "secret.safetensors", st_bytes(lora_tensors(m.t)))
    c = hub_case(tmp, m, f"hf://{REPO}", "outside the cache", files={})
    link = Path(c.hf_home) / "hub" / ("models--" + REPO.replace("/", "--")) / "snapshots" / SHA / "lora.safetensors"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    c.inputs.append(outside)
    return c


def c5_lora_file_climbs(tmp, m):
    put(tmp / "elsewhere" / "lora.safetensors", st_bytes(lora_tensors(m.t)))
    folder = tmp / "loras"
    put(folder / "mine.safetensors", st_bytes(lora_tensors(m.t)))
    c = convert(m, folder, tmp, "--lora-file", "../elsewhere/lora.safetensors")
    c.words = ("LoRA file name", "climbs out", "--lora-file")
    return c


def _index_case(tmp, m, shard_name: str):
    t = {k: v.contiguous() for k, v in m.t.items()}
    outside = tmp / "elsewhere" / "shard.safetensors"
    outside.parent.mkdir(parents=True)
    save_file(t, outside)
    index = tmp / "indexed" / "model.safetensors.index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"weight_map": {k: shard_name.format(outside=outside) for k in t}}))
    lora = put(tmp / "lora.safetensors", st_bytes(lora_tensors(m.t)))
    c = convert(m, lora, tmp, base=index)
    c.inputs.append(outside)
    c.words = ("index", "outside its folder")
    return c


def c5_index_shard_climbs(tmp, m):
    return _index_case(tmp, m, "../elsewhere/shard.safetensors")


def c5_index_shard_absolute(tmp, m):
    return _index_case(tmp, m, "{outside}")


# class 6: malformed headers and metadata, unusable factors and scales

def malformed_lora(tmp, m, *words, meta=None, mutate=None, dump=json.dumps, extra=None, **kw):
    lora = put(tmp / "bad.safetensors", st_bytes(lora_tensors(m.t, **kw) | (extra or {}), meta, mutate, dump))
    c = convert(m, lora, tmp)
    c.words = words
    return c


Q = "diffusion_model.blocks.0.self_attn.q"


def _set(key, field_, value):
    def mutate(h):
        h[key][field_] = value
    return mutate


def c6_metadata_not_an_object(tmp, m):
    return malformed_lora(tmp, m, "bad.safetensors", "__metadata__", meta=["not", "a", "map"])


def c6_offsets_not_integers(tmp, m):
    return malformed_lora(tmp, m, f"{Q}.lora_A.weight", "offsets", mutate=_set(f"{Q}.lora_A.weight",
                                                                               "data_offsets", ["0", 512]))


def c6_deeply_nested_header(tmp, m):
    def dump(h):
        return json.dumps(h)[:-1] + ', "deep": ' + "[" * 200_000 + "]" * 200_000 + "}"
    return malformed_lora(tmp, m, "bad.safetensors", "not a readable safetensors", dump=dump)


def c6_infinite_shape(tmp, m):
    def dump(h):
        return json.dumps(h).replace('"shape": [4, 32]', '"shape": [1e400, 32]', 1)
    return malformed_lora(tmp, m, "lora_A.weight", "shape", dump=dump)


def c6_huge_shape_passing_through(tmp, m):
    extra = {"diffusion_model.blocks.0.norm3.diff": torch.zeros(32)}
    return malformed_lora(tmp, m, "diffusion_model.blocks.0.norm3.diff", "shape", extra=extra,
                          mutate=_set("diffusion_model.blocks.0.norm3.diff", "shape", [2 ** 31, 2 ** 31]))


def c6_unknown_dtype_passing_through(tmp, m):
    extra = {"diffusion_model.blocks.0.norm3.diff": torch.zeros(32)}
    return malformed_lora(tmp, m, "diffusion_model.blocks.0.norm3.diff", "unknown dtype", extra=extra,
                          mutate=_set("diffusion_model.blocks.0.norm3.diff", "dtype", "Q7"))


def c6_unknown_dtype_factor(tmp, m):
    return malformed_lora(tmp, m, f"{Q}.lora_B.weight", "unknown dtype",
                          mutate=_set(f"{Q}.lora_B.weight", "dtype", "F4"))


def _factor_dtype_case(tmp, m, dtype, tag):
    t = lora_tensors(m.t)
    t[f"{Q}.lora_A.weight"] = (t[f"{Q}.lora_A.weight"] * 100).to(dtype)
    t[f"{Q}.lora_B.weight"] = (t[f"{Q}.lora_B.weight"] * 100).to(dtype)
    lora = put(tmp / "bad.safetensors", st_bytes(t))
    c = convert(m, lora, tmp)
    c.words = (f"{Q}.lora_", f"dtype {tag}")
    return c


def c6_integer_factors(tmp, m):
    return _factor_dtype_case(tmp, m, torch.int32, "I32")


def c6_fp8_factors(tmp, m):
    return _factor_dtype_case(tmp, m, torch.float8_e4m3fn, "F8_E4M3")


def c6_rank_zero(tmp, m):
    t = lora_tensors(m.t)
    t[f"{Q}.lora_A.weight"], t[f"{Q}.lora_B.weight"] = torch.zeros(0, 32), torch.zeros(32, 0)
    lora = put(tmp / "bad.safetensors", st_bytes(t))
    c = convert(m, lora, tmp)
    c.words = (Q, "rank 0")
    return c


def c6_up_with_extra_dimensions(tmp, m):
    t = lora_tensors(m.t)
    t[f"{Q}.lora_B.weight"] = torch.randn(32, 4, 3)
    lora = put(tmp / "bad.safetensors", st_bytes(t))
    c = convert(m, lora, tmp)
    c.words = (f"{Q}.lora_B.weight", "extra dimensions")
    return c


def _alpha_case(tmp, m, alpha, *words):
    t = lora_tensors(m.t)
    t[f"{Q}.alpha"] = alpha
    lora = put(tmp / "bad.safetensors", st_bytes(t))
    c = convert(m, lora, tmp)
    c.words = (f"{Q}.alpha", *words)
    return c


def c6_alpha_of_two_values(tmp, m):
    return _alpha_case(tmp, m, torch.tensor([4.0, 4.0]), "2 values")


def c6_alpha_nan(tmp, m):
    return _alpha_case(tmp, m, torch.tensor(float("nan")), "nan")


def c6_alpha_infinite(tmp, m):
    return _alpha_case(tmp, m, torch.tensor(float("inf")), "inf")


def c6_alpha_zero(tmp, m):
    return _alpha_case(tmp, m, torch.tensor(0.0), "positive")


def c6_alpha_negative(tmp, m):
    return _alpha_case(tmp, m, torch.tensor(-4.0), "positive")


def _metadata_case(tmp, m, cfg):
    return malformed_lora(tmp, m, "lora_adapter_metadata", "r and lora_alpha", alpha=None,
                          meta={"lora_adapter_metadata": json.dumps(cfg)})


def c6_peft_r_zero_rslora(tmp, m):
    return _metadata_case(tmp, m, {"r": 0, "lora_alpha": 4, "use_rslora": True})


def c6_peft_r_negative_rslora(tmp, m):
    return _metadata_case(tmp, m, {"r": -4, "lora_alpha": 4, "use_rslora": True})


def peft_folder(tmp, m, config: dict) -> Path:
    folder = tmp / "adapter"
    t = {}
    for mod, (B, A) in f.lora_factors(m.t, 1, rank=4).items():
        pre = "base_model.model." + wan.to_diffusers(mod)
        t[pre + ".lora_A.weight"], t[pre + ".lora_B.weight"] = A.contiguous(), B.contiguous()
    put(folder / "adapter_model.safetensors", st_bytes(t))
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 4} | config))
    return folder


def _peft_case(tmp, m, config, *words):
    folder = peft_folder(tmp, m, config)
    c = convert(m, folder, tmp)
    c.inputs = [m.base, m.target, *sorted(folder.iterdir())]
    c.words = words
    return c


def c6_alpha_pattern_a_list(tmp, m):
    return _peft_case(tmp, m, {"alpha_pattern": ["blocks.0.attn1.to_q"]}, "alpha_pattern", "adapter_config.json")


def c6_alpha_pattern_not_a_number(tmp, m):
    return _peft_case(tmp, m, {"alpha_pattern": {"to_q": "big"}}, "alpha_pattern", "'to_q'")


def c6_zero_dim_weight(tmp, m):
    t = dict(m.t)
    t["blocks.0.self_attn.q.weight"] = torch.tensor(1.0)
    base = f.write_model(t, tmp / "models0d" / "base.safetensors")
    target = f.write_model(t, tmp / "models0d" / "target.safetensors")
    lora = put(tmp / "lora.safetensors", st_bytes(lora_tensors(m.t)))
    c = convert(m, lora, tmp, base=base, target=target)
    c.words = ("blocks.0.self_attn.q.weight", "0-d")
    return c


def c6_unwritable_passthrough_dtype(tmp, m):
    lora = tmp / "lora.pt"
    torch.save(lora_tensors(m.t) | {"diffusion_model.blocks.0.norm3.diff": torch.zeros(4, dtype=torch.complex64)}, lora)
    c = convert(m, lora, tmp)
    c.words = ("diffusion_model.blocks.0.norm3.diff", "complex64")
    return c


# class 7: cost proportional to the input

def c7_catastrophic_pattern(tmp, m):
    groups = 14
    pat = "(?:" + "(.)*" * groups + ")" + "".join(f"\\{i}" for i in range(groups, 0, -1))
    return _peft_case(tmp, m, {"alpha_pattern": {pat: 2}}, "alpha_pattern", "too long")


def c7_huge_header(tmp, m):
    return malformed_lora(tmp, m, "bad.safetensors", "MiB header", f"{MAX_HEADER >> 20} MiB",
                          meta={"ss_tag_frequency": "x" * 99_000_000})


CASES = {name: fn for name, fn in list(globals().items()) if name[:3] in ("c3_", "c4_", "c5_", "c6_", "c7_")}


def many_passthrough_lora(tmp: Path, m, n: int = 10_000) -> Path:
    """A LoRA with its real layers and ``n`` pass-through keys (pairs for layers the model lacks)."""
    t = lora_tensors(m.t)
    for i in range(n // 2):
        t[f"diffusion_model.missing_{i}.lora_A.weight"] = torch.zeros(1, 2)
        t[f"diffusion_model.missing_{i}.lora_B.weight"] = torch.zeros(2, 1)
    return put(tmp / "many.safetensors", st_bytes(t))


def wide_loha_lora(tmp: Path, m, width: int = 2048) -> Path:
    """One LoHa layer on a 32 x 32 linear whose halves are ``width`` wide: an exact split of width**2 columns."""
    g = torch.Generator().manual_seed(4)
    t = {f"{Q}.hada_w1_a": torch.randn(32, width, generator=g) * 0.01,
         f"{Q}.hada_w1_b": torch.randn(width, 32, generator=g) * 0.01,
         f"{Q}.hada_w2_a": torch.randn(32, width, generator=g) * 0.01,
         f"{Q}.hada_w2_b": torch.randn(width, 32, generator=g) * 0.01}
    return put(tmp / "wide-loha.safetensors", st_bytes(t))


# ---- running them -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


def _digests(paths) -> dict:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest()
            for p in paths if Path(p).is_file()}


def _folder_inputs(case: Case) -> list[Path]:
    out = []
    for p in case.inputs:
        p = Path(p)
        out.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    return out


def refused(case: Case, capsys, monkeypatch) -> str:
    """Run one case in-process; check the one-line refusal; return the error line."""
    if case.hf_home is not None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(case.hf_home / "hub"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    if case.cwd is not None:
        monkeypatch.chdir(case.cwd)
    inputs = _folder_inputs(case)
    before = _digests(inputs)
    capsys.readouterr()
    rc = cli.main(case.argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("casa: error: "), lines  # no progress: before the work
    assert "Traceback" not in captured.err + captured.out
    for w in case.words:
        assert w.lower() in lines[0].lower(), lines[0]
    assert case.output is None or not case.output.exists()
    assert case.output is None or not [p for p in case.output.parent.iterdir()], "something was written"
    assert _digests(inputs) == before, "an input changed"
    return lines[0]


def _by_class(prefix):
    return [pytest.param(name, id=name) for name in CASES if name.startswith(prefix)]


@pytest.mark.parametrize("name", _by_class("c3_"))
def test_class3_a_layer_given_twice_is_refused_with_both_keys(name, models, tmp_path, capsys, monkeypatch):
    refused(CASES[name](tmp_path, models), capsys, monkeypatch)


@pytest.mark.parametrize("name", _by_class("c4_"))
def test_class4_pickled_storage_shorter_than_its_record_is_refused(name, models, tmp_path, capsys, monkeypatch):
    refused(CASES[name](tmp_path, models), capsys, monkeypatch)


def test_class4_an_intact_rewritten_checkpoint_still_converts(models, tmp_path):
    """The check refuses only what is short: the same zip rewritten whole passes and reads as saved."""
    t = {k: v.contiguous() for k, v in models.t.items()}
    torch.save(t, tmp_path / "a.pt")
    with zipfile.ZipFile(tmp_path / "a.pt") as zin, zipfile.ZipFile(tmp_path / "b.pt", "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
    pickled.check_records(tmp_path / "b.pt")
    pf = pickled.PickledFile(tmp_path / "b.pt")
    assert torch.equal(pf.read("blocks.0.ffn.0.weight"), t["blocks.0.ffn.0.weight"])


@pytest.mark.parametrize("name", _by_class("c5_"))
def test_class5_hub_and_index_names_stay_inside(name, models, tmp_path, capsys, monkeypatch):
    refused(CASES[name](tmp_path, models), capsys, monkeypatch)


def test_class5_a_local_path_is_never_recorded_as_a_hub_file(models, tmp_path, monkeypatch):
    """A local folder spelled like ``org/name@<commit>`` is a local input: provenance names it by name and hash."""
    folder = tmp_path / "org" / f"model@{SHA}"
    f.write_model(models.t, folder / "diffusion_pytorch_model.safetensors")
    lora = put(tmp_path / "lora.safetensors", st_bytes(lora_tensors(models.t)))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.safetensors"
    assert cli.main(["convert", "--base", f"org/model@{SHA}", "--target", str(models.target), "--lora", str(lora),
                     "--output", str(out), "--device", "cpu", "--method", "direct", "-q"]) == 0
    with safe_open(str(out), "pt") as fh:
        base = fh.metadata()["casa.base"]
    assert base.startswith("{"), base
    assert json.loads(base)["name"] == f"model@{SHA}" and "header_sha256" in json.loads(base)


@pytest.mark.parametrize("name", _by_class("c6_"))
def test_class6_malformed_headers_factors_and_scales(name, models, tmp_path, capsys, monkeypatch):
    refused(CASES[name](tmp_path, models), capsys, monkeypatch)


@pytest.mark.parametrize("name", _by_class("c7_"))
def test_class7_hostile_configs_and_headers_are_refused_in_bounded_time(name, models, tmp_path, capsys, monkeypatch):
    t0 = time.perf_counter()
    refused(CASES[name](tmp_path, models), capsys, monkeypatch)
    assert time.perf_counter() - t0 < 30


def test_class7_ten_thousand_passthrough_keys_convert_in_seconds(models, tmp_path):
    lora = many_passthrough_lora(tmp_path, models)
    out = tmp_path / "out.safetensors"
    t0 = time.perf_counter()
    assert cli.main(["convert", "--base", str(models.base), "--target", str(models.target), "--lora", str(lora),
                     "--output", str(out), "--device", "cpu", "--method", "direct", "-q"]) == 0
    seconds = time.perf_counter() - t0
    assert seconds < 20, seconds
    got = load_file(out)
    assert sum(k.startswith("diffusion_model.missing_") for k in got) == 10_000


_PEAK = """
import resource, sys
import torch, safetensors, scipy
from casa_core import cli
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rc = cli.main(sys.argv[1:])
print("PEAK", rc, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) // 1024)
"""


def peak_mib(argv, cwd=ROOT) -> tuple[int, int]:
    """(exit status, growth of the peak resident memory in MiB) of one CLI run in a fresh process."""
    p = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, timeout=300, cwd=cwd)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("PEAK"))
    _, rc, mib = line.split()
    return int(rc), int(mib)


def test_class7_a_wide_loha_is_not_materialised_wider_than_its_layer(models, tmp_path):
    """2048-wide halves: the exact split would be 32 x 4M (half a GiB per factor); the dense 32 x 32 is built."""
    lora = wide_loha_lora(tmp_path, models)
    rc, mib = peak_mib(["convert", "--base", str(models.base), "--target", str(models.target), "--lora", str(lora),
                        "--output", str(tmp_path / "out.safetensors"), "--device", "cpu", "--method", "direct", "-q"])
    assert rc == 0
    assert mib < 300, f"peak memory grew by {mib} MiB"
    assert (tmp_path / "out.safetensors").is_file()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64,
                                   torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn])
def test_class7_reads_at_header_offsets_give_what_safetensors_gives(tmp_path, dtype):
    """The one-seek reads (no second header parse per key) return the very tensors safetensors does."""
    g = torch.Generator().manual_seed(1)
    t = {"a": (torch.randn(3, 5, generator=g) * 4).to(dtype), "empty": torch.zeros(0, 3).to(dtype),
         "scalar": torch.tensor(2.5).to(dtype), "b": (torch.randn(7, generator=g) * 4).to(dtype)}
    save_file(t, tmp_path / "x.safetensors")
    store = TensorStore([tmp_path / "x.safetensors"])
    want = load_file(tmp_path / "x.safetensors")
    for k, v in want.items():
        got = store.read(k)
        assert got.dtype == v.dtype and got.shape == v.shape, k
        assert torch.equal(got.view(torch.uint8) if got.dim() else got.reshape(1).view(torch.uint8),
                           v.view(torch.uint8) if v.dim() else v.reshape(1).view(torch.uint8)), k
    store.close()


# ---- class 8: names from a file, printed ------------------------------------------------------

EVIL = "diffusion_model.blocks.0.evil\x1b[2J\rFAKE: line\x07.diff"
EVIL_PAIR = "diffusion_model.nowhere\x1b]0;pwned\x07"


def evil_lora(tmp, m) -> Path:
    t = lora_tensors(m.t) | {EVIL: torch.zeros(4), f"{EVIL_PAIR}.lora_A.weight": torch.zeros(1, 2),
                             f"{EVIL_PAIR}.lora_B.weight": torch.zeros(2, 1)}
    return put(tmp / "evil.safetensors", st_bytes(t))


def _no_controls(text: str) -> None:
    assert not any(c in text for c in "\x1b\x07\r"), repr(text)
    assert not any(line.startswith("FAKE") for line in text.splitlines()), text


def test_class8_inspect_escapes_control_characters_in_key_names(models, tmp_path, capsys):
    lora = evil_lora(tmp_path, models)
    assert cli.main(["inspect", "--base", str(models.base), "--target", str(models.target), "--lora", str(lora),
                     "--no-drift"]) == 0
    out = capsys.readouterr().out
    _no_controls(out)
    assert "evil\\x1b[2J\\rFAKE: line\\x07.diff" in out and "nowhere\\x1b]0;pwned\\x07" in out
    assert cli.main(["inspect", "--base", str(models.base), "--target", str(models.target), "--lora", str(lora),
                     "--no-drift", "--json"]) == 0
    out = capsys.readouterr().out
    _no_controls(out)
    assert EVIL in json.loads(out)["other_keys"]


def test_class8_convert_notes_escape_control_characters(models, tmp_path, capsys):
    lora = evil_lora(tmp_path, models)
    out = tmp_path / "out.safetensors"
    assert cli.main(["convert", "--base", str(models.base), "--target", str(models.target), "--lora", str(lora),
                     "--output", str(out), "--device", "cpu", "--method", "direct", "--format", "diffusers"]) == 0
    err = capsys.readouterr().err
    _no_controls(err)
    assert "note: the diffusers layout cannot hold" in err


def test_class8_an_error_line_cannot_be_split_by_a_key_name(models, tmp_path, capsys):
    """A key holding a newline, named by an error, stays on the one error line."""
    bad = f"{Q}\nFAKE: ok"
    t = lora_tensors(models.t)
    t[f"{bad}.lora_A.weight"], t[f"{bad}.lora_B.weight"] = torch.zeros(0, 32), torch.zeros(32, 0)
    lora = put(tmp_path / "bad.safetensors", st_bytes(t))
    assert cli.main(["inspect", "--lora", str(lora), "--base", str(models.base)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rank 0" in err[0] and "\\nFAKE: ok" in err[0], err
