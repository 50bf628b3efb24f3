"""Hugging Face repo ids: resolved from a hub cache built in a temporary folder, never from the network.

The online path runs against fakes of ``HfApi.model_info`` and ``hf_hub_download``
that serve a dict of files, so what is fetched, progress, cancel and the error
messages are checked without a connection.
"""

import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants, errors
from safetensors import safe_open

from casa_core.conversion import Conversion
from casa_core.errors import Cancelled, CasaError
from casa_core.settings import RunOptions, TransferSettings
from casa_core.sources import hub, open_lora, open_model
from tests.core import factories as f

SHA = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "fedcba9876543210fedcba9876543210fedcba98"


def put_in_cache(cache: Path, repo_id: str, files: dict, sha: str = SHA, ref: str | None = "main") -> Path:
    """A hub cache entry as huggingface_hub lays it out: refs/<ref> holds the sha, files under snapshots/<sha>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / sha
    for rel, src in files.items():
        dst = snap / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            shutil.copy(src, dst)
    if ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(sha)
    return snap


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty hub cache in tmp_path, with HF_HUB_OFFLINE on (as huggingface_hub read it at import)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny Wan model in three layouts and a LoRA for it, as local files (read only)."""
    t = f.model_tensors(0)
    src = tmp_path_factory.mktemp("src")
    orig = f.write_model(t, src / "orig" / "diffusion_pytorch_model.safetensors")
    sharded = f.write_model(t, src / "sharded" / "diffusion_pytorch_model.safetensors", shards=2)
    diff = f.write_model(f.drifted(t, 5), src / "diff", layout="diffusers", folder="diffusers", shards=2)
    factors = f.lora_factors(t, 1, rank=4)
    lora = f.write_lora(factors, src / "lora.safetensors", alpha=2.0)
    return SimpleNamespace(t=t, orig=orig, sharded=sharded.parent, diff=diff, lora=lora, factors=factors)


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


# ---- parsing --------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("Wan-AI/Wan2.1-T2V-1.3B", ("Wan-AI/Wan2.1-T2V-1.3B", None, "")),
    ("FastVideo/FastWan2.1-T2V-1.3B-Diffusers@v1.0:transformer", ("FastVideo/FastWan2.1-T2V-1.3B-Diffusers", "v1.0",
                                                                  "transformer")),
    ("org/name:split_files/x.safetensors", ("org/name", None, "split_files/x.safetensors")),
    ("hf://org/model.safetensors", ("org/model.safetensors", None, "")),
    ("models/base.safetensors", None),        # a missing local file, not a repo
    ("/abs/path", None), ("./rel/path", None), ("lora.safetensors", None), ("a/b/c", None),
])
def test_parse(text, want):
    ref = hub.parse(text)
    assert (None if ref is None else (ref.repo_id, ref.revision, ref.subfolder)) == want


def test_existing_local_path_wins(tmp_path, monkeypatch):
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    monkeypatch.chdir(tmp_path)
    assert hub.parse("org/name") is None


# ---- offline, from the cache -----------------------------------------------------------

def test_models_resolve_offline(offline, inputs):
    put_in_cache(offline, "Wan-AI/Wan2.1-T2V-1.3B", {"diffusion_pytorch_model.safetensors": inputs.orig,
                                                     "Wan2.1_VAE.pth": b"not needed", "config.json": b"{}"})
    put_in_cache(offline, "Wan-AI/Wan2.1-T2V-14B", _tree(inputs.sharded), sha=SHA2)
    put_in_cache(offline, "FastVideo/FastWan2.1-T2V-1.3B-Diffusers", _tree(inputs.diff))
    base = open_model("Wan-AI/Wan2.1-T2V-1.3B", "base")
    assert base.identity == f"Wan-AI/Wan2.1-T2V-1.3B@{SHA}"
    assert base.layout == "original" and SHA in str(base.path)
    sharded = open_model("Wan-AI/Wan2.1-T2V-14B", "base")
    assert sharded.identity.endswith(SHA2) and len(sharded.store.files) == 2
    target = open_model("FastVideo/FastWan2.1-T2V-1.3B-Diffusers", "target")
    assert target.layout == "diffusers" and target.identity == f"FastVideo/FastWan2.1-T2V-1.3B-Diffusers@{SHA}"
    assert set(target.canonical_keys()) == set(base.canonical_keys())
    # a subfolder, and a pinned revision
    sub = open_model(f"FastVideo/FastWan2.1-T2V-1.3B-Diffusers@{SHA}:transformer", "target")
    assert sub.identity == f"FastVideo/FastWan2.1-T2V-1.3B-Diffusers@{SHA}:transformer"


def test_loras_resolve_offline(offline, inputs, tmp_path):
    put_in_cache(offline, "someone/wan-lora", {"my_lora.safetensors": inputs.lora, "README.md": b"hi"})
    lora = open_lora("someone/wan-lora")
    assert lora.identity == f"someone/wan-lora@{SHA}" and len(lora.pairs) == len(inputs.factors)
    put_in_cache(offline, "someone/many", {"a/v1.safetensors": inputs.lora, "v2.safetensors": inputs.lora})
    with pytest.raises(hub.ChoiceNeeded) as e:
        open_lora("someone/many")
    assert "pick one by its file name" in str(e.value) and e.value.setting == "lora_file"
    assert e.value.choices == ["a/v1.safetensors", "v2.safetensors"]
    chosen = open_lora("someone/many", lora_file="v1.safetensors")
    assert chosen.identity == f"someone/many@{SHA}:a/v1.safetensors"
    assert open_lora("someone/many", lora_file="a/v1.safetensors").path == chosen.path


def test_missing_file_offline_is_a_clear_error(offline, inputs):
    tree = _tree(inputs.sharded)
    tree.pop(sorted(k for k in tree if k.endswith(".safetensors"))[0])   # one shard never downloaded
    put_in_cache(offline, "Wan-AI/Wan2.1-T2V-14B", tree)
    with pytest.raises(CasaError) as e:
        open_model("Wan-AI/Wan2.1-T2V-14B", "base")
    msg = str(e.value)
    assert "-00001-of-00002.safetensors is not in the Hugging Face cache" in msg and "HF_HUB_OFFLINE" in msg
    assert len(msg.splitlines()) == 1
    with pytest.raises(CasaError, match="not in the Hugging Face cache .* HF_HUB_OFFLINE is set"):
        open_model("nobody/never-downloaded", "base")
    put_in_cache(offline, "someone/wan-lora", {"my_lora.safetensors": inputs.lora})
    with pytest.raises(CasaError, match="has no file other.safetensors.*HF_HUB_OFFLINE"):
        open_lora("someone/wan-lora", lora_file="other.safetensors")


def test_cli_convert_from_hub_cache_records_the_sha(tmp_path, inputs):
    """The whole CLI in a subprocess: HF_HOME and HF_HUB_OFFLINE as a user sets them."""
    cache = tmp_path / "home" / "hub"
    put_in_cache(cache, "Wan-AI/Wan2.1-T2V-1.3B", {"diffusion_pytorch_model.safetensors": inputs.orig})
    put_in_cache(cache, "FastVideo/FastWan", _tree(inputs.diff), sha=SHA2)
    put_in_cache(cache, "someone/loras", {"a.safetensors": inputs.lora, "b.safetensors": inputs.lora})
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = tmp_path / "out.safetensors"
    cmd = [sys.executable, "-m", "casa_core", "convert", "--base", "Wan-AI/Wan2.1-T2V-1.3B",
           "--target", "FastVideo/FastWan", "--lora", "someone/loras", "--lora-file", "b.safetensors",
           "--output", str(out), "--device", "cpu", "--quiet", "--method", "direct"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
    assert meta["casa.base"] == f"Wan-AI/Wan2.1-T2V-1.3B@{SHA}"
    assert meta["casa.target"] == f"FastVideo/FastWan@{SHA2}"
    assert meta["casa.lora"] == f"someone/loras@{SHA}:b.safetensors"
    # without --lora-file the CLI says which files there are, in one line
    p = subprocess.run(cmd[:10] + cmd[12:], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2 and "a.safetensors, b.safetensors" in p.stderr and "--lora-file" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# ---- online, against fakes of the hub ---------------------------------------------------

class FakeHub:
    """Serves ``files`` (repo path -> bytes or Path) at commit ``sha``; records what is fetched."""

    def __init__(self, cache: Path, repo_id: str, files: dict, sha: str = SHA):
        self.cache, self.repo_id, self.sha = cache, repo_id, sha
        self.files = {k: (v if isinstance(v, bytes) else Path(v).read_bytes()) for k, v in files.items()}
        self.fetched: list[str] = []
        self.info_error: Exception | None = None

    def model_info(self, repo_id, revision=None, files_metadata=False, token=None, **kw):
        if self.info_error is not None:
            raise self.info_error
        assert repo_id == self.repo_id
        sib = [SimpleNamespace(rfilename=k, size=len(v)) for k, v in self.files.items()]
        return SimpleNamespace(sha=self.sha, siblings=sib)

    def download(self, repo_id, filename, *, revision=None, cache_dir=None, token=None, tqdm_class=None, **kw):
        assert Path(cache_dir) == self.cache and revision in (None, "main")
        self.fetched.append(filename)
        data = self.files[filename]
        snap = put_in_cache(Path(cache_dir), repo_id, {filename: data}, sha=self.sha)
        bar = tqdm_class(total=len(data), disable=True)
        for _ in range(2):
            bar.update(len(data) // 2)
        bar.close()
        return str(snap / filename)


@pytest.fixture
def online(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def install(repo_id, files, sha=SHA):
        fake = FakeHub(cache, repo_id, files, sha)
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda _api, *a, **kw: fake.model_info(*a, **kw))
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.download)
        return fake
    return install


def test_online_fetches_only_the_transformer(online, inputs):
    files = {f"transformer/{k}": v for k, v in _tree(inputs.diff / "transformer").items()}
    files |= {"model_index.json": inputs.diff / "model_index.json", "vae/diffusion_pytorch_model.safetensors": b"x",
              "text_encoder/model-00001-of-00005.safetensors": b"x", "README.md": b"x"}
    fake = online("FastVideo/FastWan2.1-T2V-1.3B-Diffusers", files)
    seen = []
    target = open_model("FastVideo/FastWan2.1-T2V-1.3B-Diffusers", "target", progress=seen.append)
    assert target.identity == f"FastVideo/FastWan2.1-T2V-1.3B-Diffusers@{SHA}"
    assert sorted(fake.fetched) == sorted(k for k in files if k.startswith("transformer/") or k == "model_index.json")
    assert fake.fetched[: 2] == ["model_index.json", "transformer/diffusion_pytorch_model.safetensors.index.json"]
    assert seen and all(isinstance(p, hub.DownloadProgress) for p in seen)
    assert {p.file for p in seen} >= {"model_index.json", "transformer/diffusion_pytorch_model.safetensors.index.json"}
    # a second open is served by the cache alone
    fake.fetched.clear()
    fake.info_error = AssertionError("the network was used")
    again = open_model("FastVideo/FastWan2.1-T2V-1.3B-Diffusers", "target")
    assert again.identity == target.identity and fake.fetched == []


def test_online_original_repo_skips_other_weights(online, inputs):
    fake = online("Wan-AI/Wan2.1-T2V-1.3B", {"diffusion_pytorch_model.safetensors": inputs.orig,
                                             "models_t5_umt5-xxl-enc-bf16.pth": b"x", "Wan2.1_VAE.pth": b"x"})
    open_model("Wan-AI/Wan2.1-T2V-1.3B", "base")
    assert fake.fetched == ["diffusion_pytorch_model.safetensors"]


def test_online_lora_choice_and_cancel(online, inputs):
    fake = online("someone/loras", {"a.safetensors": inputs.lora, "b.safetensors": inputs.lora})
    with pytest.raises(hub.ChoiceNeeded, match="pick one by its file name"):
        open_lora("someone/loras")
    assert fake.fetched == []
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        open_lora("someone/loras", lora_file="a.safetensors", cancel=cancel)
    assert fake.fetched == []
    lora = open_lora("someone/loras", lora_file="a.safetensors")
    assert fake.fetched == ["a.safetensors"] and lora.identity == f"someone/loras@{SHA}:a.safetensors"


def test_cancel_during_a_download(online, inputs):
    online("someone/lora", {"a.safetensors": inputs.lora})
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        open_lora("someone/lora", cancel=cancel, progress=lambda p: cancel.set())


def _http_error(cls, status):
    httpx = importlib.import_module(errors.HTTPError.__module__.split(".")[0])
    response = httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/x/y"))
    return cls("boom", response=response)


@pytest.mark.parametrize("exc, words", [
    (lambda: _http_error(errors.GatedRepoError, 403), ["gated", "accept", "HF_TOKEN"]),
    (lambda: _http_error(errors.RepositoryNotFoundError, 401), ["does not exist", "private", "HF_TOKEN"]),
    (lambda: _http_error(errors.RevisionNotFoundError, 404), ["revision", "does not exist"]),
    (lambda: ConnectionError("Name or service not known"), ["cannot reach", "HF_HUB_OFFLINE=1"]),
])
def test_hub_errors_say_which_and_what_to_do(online, monkeypatch, exc, words):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    fake = online("x/y", {})
    fake.info_error = exc()
    with pytest.raises(CasaError) as e:
        open_model("x/y@v2", "base")
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "x/y" in msg
    for w in words:
        assert w in msg, msg


def test_convert_from_hub_is_the_same_as_from_files(offline, inputs, tmp_path):
    put_in_cache(offline, "Wan-AI/Wan2.1-T2V-1.3B", {"diffusion_pytorch_model.safetensors": inputs.orig})
    put_in_cache(offline, "someone/wan-lora", {"l.safetensors": inputs.lora})
    opts = RunOptions(rank="full", device="cpu", view_size=0)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    few = r"blocks\.0\.self_attn"
    Conversion.open("Wan-AI/Wan2.1-T2V-1.3B", str(inputs.diff), "someone/wan-lora", layers=few).convert(
        a, TransferSettings(), opts)
    Conversion.open(inputs.orig, inputs.diff, inputs.lora, layers=few).convert(b, TransferSettings(), opts)
    ga, gb = f.read_updates(a), f.read_updates(b)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    # inputs in the cache are untouched, and the report's sources carry the sha
    meta = json.loads(json.dumps(Conversion.open("Wan-AI/Wan2.1-T2V-1.3B", str(inputs.diff),
                                                 "someone/wan-lora").plan.describe()))
    assert meta["base"]["source"].endswith(SHA) and meta["lora"]["source"] == f"someone/wan-lora@{SHA}"


def test_online_repack_repo_needs_a_file_named(online, inputs):
    """A ComfyUI repack holds many variants: the user names one after ':' and only that is fetched."""
    repo = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
    files = {f"split_files/diffusion_models/wan2.1_t2v_1.3B_{v}.safetensors": inputs.orig for v in ("fp16", "bf16")}
    files["split_files/vae/wan_2.1_vae.safetensors"] = b"x"
    fake = online(repo, files)
    with pytest.raises(hub.ChoiceNeeded) as e:
        open_model(repo, "base")
    assert f"name one as {repo}:FILE" in str(e.value) and len(e.value.choices) == 3 and fake.fetched == []
    name = "split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors"
    m = open_model(f"{repo}:{name}", "base")
    assert fake.fetched == [name] and m.identity == f"{repo}@{SHA}:{name}"


def test_a_partial_cache_does_not_decide(online, inputs, monkeypatch):
    """Another tool cached only the VAE of a diffusers repo: the repo's listing decides, not the cache."""
    repo = "FastVideo/FastWan2.1-T2V-1.3B-Diffusers"
    index, vae = inputs.diff / "model_index.json", "vae/diffusion_pytorch_model.safetensors"
    fake = online(repo, {f"transformer/{k}": v for k, v in _tree(inputs.diff / "transformer").items()}
                  | {"model_index.json": index, vae: b"x"})
    put_in_cache(Path(constants.HF_HUB_CACHE), repo, {"model_index.json": index, vae: b"x"})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CasaError, match="no weights under transformer/ in the Hugging Face cache, and HF_HUB_OFF"):
        open_model(repo, "target")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert open_model(repo, "target").layout == "diffusers"
    assert vae not in fake.fetched and "model_index.json" in fake.fetched
