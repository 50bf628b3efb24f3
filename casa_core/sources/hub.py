"""Hugging Face repo ids as inputs: ``org/name[@revision][:subfolder]``.

Only what the transformer needs is fetched (``model_index.json`` + ``transformer/*``
weights for diffusers repos; the weight files, or one index and its shards, otherwise;
one LoRA file, or a PEFT adapter), into the standard hub cache. ``HF_TOKEN``,
``HF_HOME`` and ``HF_HUB_OFFLINE`` work through huggingface_hub itself. What the cache
already holds, when it is enough on its own, is used without any network call.
The resolved commit sha becomes the source's identity, for provenance.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Cancelled, CasaError
from ..experts import pick
from .pickled import SUFFIXES as PICKLED

_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[^:@]+))?(?::(?P<sub>[^:]+))?$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_LOCAL_SUFFIXES = (".safetensors", ".json", *PICKLED)
HUB_SCHEME = "hf://"


@dataclass(frozen=True)
class HubRef:
    """A repo id as typed: ``org/name``, an optional revision and an optional subfolder (or file)."""
    repo_id: str
    revision: str | None = None
    subfolder: str = ""

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "") + (
            f":{self.subfolder}" if self.subfolder else "")


@dataclass(frozen=True)
class DownloadProgress:
    """One progress report: file ``index`` of ``files``, ``done`` of ``total`` bytes of it."""
    file: str
    index: int
    files: int
    done: int
    total: int | None


@dataclass(frozen=True)
class Resolved:
    """A hub input made local: the path to open, and ``org/name@sha[:subfolder]`` for provenance."""
    path: Path
    identity: str
    sha: str
    files: tuple[str, ...] = field(default=())


class ChoiceNeeded(CasaError):
    """The repo holds several candidates; ``choices`` lists them (the GUI offers them)."""

    def __init__(self, what: str, todo: str, choices: list[str], setting: str | None = None):
        super().__init__(what, todo, setting=setting, example="NAME" if setting else None)
        self.choices = choices


def parse(text: str) -> HubRef | None:
    """The repo id ``text`` names, or None when it is (or looks like) a local path.

    ``hf://org/name`` is always a repo id; a bare ``org/name`` only when no local
    path of that name exists and it does not end like a weight file.
    """
    text = str(text).strip()
    forced = text.startswith(HUB_SCHEME)
    if forced:
        text = text[len(HUB_SCHEME):]
    elif not text or Path(text).expanduser().exists() or text.startswith(("/", ".", "~")) or "\\" in text:
        return None
    m = _REPO_ID.match(text)
    if not m:
        if forced:
            raise CasaError(f"{HUB_SCHEME}{text} is not a Hugging Face repo id",
                            "write org/name, optionally @revision and :subfolder")
        return None
    if not forced and m["repo"].lower().endswith(_LOCAL_SUFFIXES) and not m["sub"]:
        return None
    if m["rev"]:
        check_inside(m["rev"], f"the revision of {text}")
    if m["sub"]:
        check_inside(m["sub"].rstrip("/"), f"the subfolder of {text}")
    return HubRef(m["repo"], m["rev"], (m["sub"] or "").strip("/"))


def climbs(rel: str) -> bool:
    """True for a path that is absolute or leaves its folder (``..``, a drive, a backslash, NUL)."""
    rel = str(rel)
    return (not rel or rel.startswith("/") or "\\" in rel or "\0" in rel or re.match(r"^[A-Za-z]:", rel) is not None
            or any(part == ".." for part in rel.split("/")))


def check_inside(rel: str, what: str, setting: str | None = None) -> None:
    """Refuse a name that would climb out of its folder (revision, subfolder, file or shard name)."""
    if climbs(rel):
        shown = rel if len(rel) <= 80 else rel[:80] + "..."
        raise CasaError(f"{what} ({shown!r}) climbs out of its folder (an absolute path or '..')",
                        "name a branch, tag, commit, folder or file inside the repo or folder", setting=setting)


# ---- what to fetch ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Choice:
    needed: tuple[str, ...]        # paths relative to the subfolder
    entry: str                     # what to open, relative to the subfolder ("" = the folder)
    index: str | None = None       # a shard index whose weight map adds files


def _is_weight(f: str) -> bool:
    return f.endswith(".safetensors") or f.endswith(PICKLED)


def _weights(files: list[str], repo: HubRef, prefix: str = "") -> tuple[str | None, list[str]] | None:
    """(index, [index] or [the weight file]) among files of one folder; None if none there."""
    idx = sorted(f for f in files if f.endswith(".safetensors.index.json"))
    if idx:
        return prefix + idx[0], [prefix + idx[0]]
    for group in ([f for f in files if f.endswith(".safetensors")], [f for f in files if f.endswith(PICKLED)]):
        if len(group) == 1:
            return None, [prefix + group[0]]
        if group:
            raise _several(repo, [prefix + f for f in sorted(group)], "model")
    return None


def _several(repo: HubRef, choices: list[str], kind: str) -> ChoiceNeeded:
    shown = ", ".join(choices[:6]) + (", ..." if len(choices) > 6 else "")
    todo = ("pick one by its file name" if kind == "lora"
            else f"name one as {repo.repo_id}:{(repo.subfolder + '/') if repo.subfolder else ''}FILE")
    label = "LoRA" if kind == "lora" else "model"
    n = len(choices)
    return ChoiceNeeded(f"{label} repo {repo} holds {n} weight file{'s' * (n != 1)} ({shown})", todo, choices,
                        "lora_file" if kind == "lora" else None)


def _expert_folder(listing: list[str], repo: HubRef, expert: str | None) -> str | None:
    """The folder of the chosen expert in a two-expert repo's listing; None for other repos."""
    from .. import families

    top_dirs = {f.split("/", 1)[0] for f in listing if "/" in f}
    diffusers = "model_index.json" in listing
    have: dict[str, str] = {}
    for fam in families.FAMILIES:
        experts = getattr(fam, "EXPERTS", {})    # expert -> (original-layout folder, diffusers folder)
        second = [f[1] for f in experts.values()][1:]
        layout = 1 if diffusers and any(f in top_dirs for f in second) else (
            0 if any(orig in top_dirs for orig, _ in experts.values()) else None)
        if layout is not None:
            have = {e: f[layout] for e, f in experts.items() if f[layout] in top_dirs}
            break
    return pick(f"model repo {repo}", have, expert) if have else None


def _choose_model(listing: list[str], repo: HubRef, expert: str | None = None) -> _Choice:
    top = [f for f in listing if "/" not in f]
    picked = _expert_folder(listing, repo, expert)
    tname = picked or "transformer"
    if picked and "model_index.json" not in top:   # original layout: the expert's folder is the model
        sub = [f[len(tname) + 1:] for f in listing if f.startswith(tname + "/") and f.count("/") == 1]
        found = _weights(sub, repo, tname + "/")
        if found is None:
            raise _Missing(f"repo {repo} has no weights under {tname}/")
        index, files = found
        return _Choice(tuple(files), "", index)
    if "model_index.json" in top:  # a diffusers repo: only its transformer counts
        tdir = [f[len(tname) + 1:] for f in listing if f.startswith(tname + "/") and f.count("/") == 1]
        found = _weights(tdir, repo, tname + "/")
        if found is None:
            raise _Missing(f"diffusers repo {repo} has no weights under {tname}/")
        index, files = found
        config = [f"{tname}/config.json"] if "config.json" in tdir else []
        return _Choice(("model_index.json", *config, *files), "", index)
    found = _weights(top, repo)
    if found is None:
        deeper = sorted(f for f in listing if _is_weight(f))
        if deeper:
            raise _several(repo, deeper, "model")
        raise _Missing(f"repo {repo} holds no model weights (.safetensors, .pt, .pth, .ckpt)")
    index, files = found
    return _Choice(tuple(files), index or files[0], index)


def _choose_lora(listing: list[str], repo: HubRef, lora_file: str | None) -> _Choice:
    cands = sorted(f for f in listing if f.endswith(".safetensors")) or sorted(
        f for f in listing if f.endswith(PICKLED))
    if lora_file:
        name = lora_file.strip("/")
        hits = [f for f in cands if f == name] or [f for f in cands if f.rsplit("/", 1)[-1] == name]
        if len(hits) != 1:
            if len(hits) > 1:
                raise _several(repo, hits, "lora")
            raise _Missing(f"LoRA repo {repo} has no file {name}" + (f" (it holds {', '.join(cands[:6])})"
                                                                      if cands else ""))
        return _Choice((hits[0],), hits[0])
    if "adapter_config.json" in listing:
        weights = next((w for w in ("adapter_model.safetensors", "adapter_model.bin") if w in listing), None)
        if weights:
            return _Choice(("adapter_config.json", weights), "")
    if len(cands) == 1:
        return _Choice((cands[0],), cands[0])
    if not cands:
        raise _Missing(f"repo {repo} holds no LoRA weights (.safetensors)")
    raise _several(repo, cands, "lora")


def _choose(kind: str, listing: list[str], repo: HubRef, lora_file: str | None, expert: str | None = None) -> _Choice:
    return _choose_lora(listing, repo, lora_file) if kind == "lora" else _choose_model(listing, repo, expert)


class _Missing(Exception):
    """Nothing suitable in a listing (the cache's, or the repo's)."""


def _shards(index_path: Path, index_rel: str) -> list[str]:
    try:
        wm = json.loads(index_path.read_text())["weight_map"]
        files = sorted(set(wm.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CasaError(f"{index_rel} is not a valid safetensors index", "re-download the repo") from None
    folder = index_rel.rsplit("/", 1)[0] + "/" if "/" in index_rel else ""
    for f in files:
        if not isinstance(f, str):
            raise CasaError(f"{index_rel} is not a valid safetensors index", "re-download the repo")
        check_inside(f, f"a shard named in {index_rel}")
    return [folder + f for f in files]


# ---- the cache -----------------------------------------------------------------------

def cache_dir() -> Path:
    """The hub cache huggingface_hub uses now (``HF_HUB_CACHE`` / ``HF_HOME``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _cached_sha(cache: Path, ref: HubRef) -> str | None:
    repo = _repo_dir(cache, ref.repo_id)
    rev = ref.revision or "main"
    if _SHA.match(rev):
        return rev if (repo / "snapshots" / rev).is_dir() else None
    try:
        sha = (repo / "refs" / rev).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _SHA.match(sha):
        raise CasaError(f"the Hugging Face cache's ref {rev} of {ref.repo_id} holds {sha[:50]!r}, not a commit hash",
                        f"delete {repo / 'refs' / rev} (it is written again on the next download), "
                        f"or pin a commit: {ref.repo_id}@<commit>")
    return sha if (repo / "snapshots" / sha).is_dir() else None


def _inside_cache(cache: Path, repo_id: str, paths) -> None:
    """Refuse a resolved file that lies outside the cache (a snapshot link pointing elsewhere)."""
    repo = _repo_dir(cache, repo_id)
    roots = [Path(cache).resolve(), (repo / "blobs").resolve()]
    for p in paths:
        real = Path(p).resolve()
        if not any(real == r or r in real.parents for r in roots):
            raise CasaError(f"{p} in the Hugging Face cache links to {real}, outside the cache",
                            f"delete {repo} from the cache and download it again")


def _listing(folder: Path) -> list[str]:
    """Files under a snapshot folder (symlinks to blobs count when the blob is there)."""
    out = []
    for root, _dirs, files in os.walk(folder):
        for f in files:
            p = Path(root) / f
            if p.is_file():
                out.append(p.relative_to(folder).as_posix())
    return sorted(out)


def _from_cache(cache: Path, ref: HubRef, kind: str, lora_file: str | None,
                expert: str | None = None) -> Resolved | None:
    """The input from the cache alone, when the cache holds all it needs; else None."""
    sha = _cached_sha(cache, ref)
    if sha is None:
        return None
    root = _repo_dir(cache, ref.repo_id) / "snapshots" / sha
    base = root / ref.subfolder if ref.subfolder else root
    if base.is_file():
        _inside_cache(cache, ref.repo_id, [base])
        return Resolved(base, _identity(ref, sha, kind, lora_file, None), sha, (ref.subfolder,))
    if not base.is_dir():
        return None
    listing = _listing(base)
    try:
        choice = _choose(kind, listing, ref, lora_file, expert)
    except (_Missing, ChoiceNeeded, CasaError):
        return None  # a partial cache decides nothing; the repo's own listing will
    needed = list(choice.needed)
    if choice.index:
        needed += _shards(base / choice.index, choice.index)
    if any(f not in listing for f in needed):
        return None
    _inside_cache(cache, ref.repo_id, [base / f for f in needed])
    return Resolved(base / choice.entry if choice.entry else base,
                    _identity(ref, sha, kind, lora_file, choice), sha, tuple(needed))


def _identity(ref: HubRef, sha: str, kind: str, lora_file: str | None, choice: _Choice | None) -> str:
    out = f"{ref.repo_id}@{sha}"
    where = ref.subfolder
    if kind == "lora" and lora_file and choice is not None:
        where = f"{where}/{choice.entry}" if where else choice.entry
    return out + (f":{where}" if where else "")


# ---- resolving -------------------------------------------------------------------------

def resolve(ref: HubRef, kind: str = "model", *, lora_file: str | None = None,
            progress: Callable[[DownloadProgress], None] | None = None,
            cancel: threading.Event | None = None, cache: Path | None = None,
            token: str | None = None, expert: str | None = None) -> Resolved:
    """Make a hub input local: from the cache when it is enough, else fetch only what is needed.

    ``kind`` is ``model`` or ``lora``. ``progress`` gets a ``DownloadProgress`` as bytes
    arrive; setting ``cancel`` stops between (and during) downloads with ``Cancelled``.
    Every failure is a one-line ``CasaError`` that says whether the repo is missing,
    private, gated, not cached while offline, or unreachable.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    found = _from_cache(cache, ref, kind, lora_file, expert)
    if found is not None:
        return found
    if _offline():
        raise _offline_error(cache, ref, kind, lora_file, expert)
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(ref.repo_id, revision=ref.revision, files_metadata=True, token=token)
    except _hub_errors() as exc:
        raise _hub_error(exc, ref) from None
    sha = info.sha
    sizes = {s.rfilename: s.size for s in (info.siblings or [])}
    sub = ref.subfolder
    if sub and sub in sizes:  # the "subfolder" names one file
        path = _fetch(ref, [sub], "", sizes, cache, token, progress, cancel, sha)[0]
        return Resolved(path, _identity(ref, sha, kind, lora_file, None), sha, (sub,))
    prefix = sub + "/" if sub else ""
    listing = [f[len(prefix):] for f in sizes if f.startswith(prefix)]
    if not listing:
        raise CasaError(f"{ref.repo_id}@{ref.revision or 'main'} has no folder or file {sub}",
                        "check the part after ':'")
    try:
        choice = _choose(kind, listing, ref, lora_file, expert)
    except _Missing as exc:
        raise CasaError(str(exc), "check the repo id" + (" and the LoRA file name" if kind == "lora" else ""),
                        setting="lora_file" if kind == "lora" else None) from None
    needed = list(choice.needed)
    paths = _fetch(ref, needed, prefix, sizes, cache, token, progress, cancel, sha)
    if choice.index:
        shards = _shards(paths[needed.index(choice.index)], choice.index)
        _fetch(ref, shards, prefix, sizes, cache, token, progress, cancel, sha)
        needed += shards
    base = _repo_dir(cache, ref.repo_id) / "snapshots" / sha
    base = base / sub if sub else base
    return Resolved(base / choice.entry if choice.entry else base, _identity(ref, sha, kind, lora_file, choice),
                    sha, tuple(needed))


def _fetch(ref, files, prefix, sizes, cache, token, progress, cancel, sha) -> list[Path]:
    from huggingface_hub import hf_hub_download

    out = []
    for i, f in enumerate(files):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        name = prefix + f
        bar = _bar_class(progress, cancel, f, i, len(files))
        try:
            # the revision as typed (not the sha), so the cache's refs/<branch> is written too
            p = Path(hf_hub_download(ref.repo_id, name, revision=ref.revision, cache_dir=cache, token=token,
                                     tqdm_class=bar))
        except _hub_errors() as exc:
            raise _hub_error(exc, ref, name) from None
        _inside_cache(cache, ref.repo_id, [p])
        if sha not in p.parts:
            raise CasaError(f"{ref} moved to a new commit while its files were downloading",
                            f"run again, or pin the revision: {ref.repo_id}@{sha}")
        if progress is not None:
            size = sizes.get(name)
            progress(DownloadProgress(f, i + 1, len(files), size or 0, size))
        out.append(p)
    return out


def _bar_class(progress, cancel, name: str, index: int, count: int):
    """huggingface_hub's own progress bar, also reporting to ``progress`` and honouring ``cancel``."""
    from huggingface_hub.utils import tqdm

    class Bar(tqdm):
        def update(self, n=1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            out = super().update(n)
            if progress is not None:
                progress(DownloadProgress(name, index, count, int(self.n), self.total))
            return out

    return Bar


def _offline_error(cache: Path, ref: HubRef, kind: str, lora_file: str | None,
                   expert: str | None = None) -> CasaError:
    todo = "download it once while online, or unset HF_HUB_OFFLINE"
    sha = _cached_sha(cache, ref)
    if sha is None:
        return CasaError(f"{ref} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set", todo)
    root = _repo_dir(cache, ref.repo_id) / "snapshots" / sha
    base = root / ref.subfolder if ref.subfolder else root
    listing = _listing(base) if base.is_dir() else []
    try:
        choice = _choose(kind, listing, ref, lora_file, expert)
    except _Missing as exc:
        return CasaError(f"{exc} in the Hugging Face cache, and HF_HUB_OFFLINE is set", todo)
    needed = list(choice.needed)
    if choice.index and choice.index in listing:
        needed += _shards(base / choice.index, choice.index)
    missing = next((f for f in needed if f not in listing), "?")
    return CasaError(f"{ref}: {missing} is not in the Hugging Face cache and HF_HUB_OFFLINE is set", todo)


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    # the hub's own errors, its HTTP client's (connect, timeout), the OS's; ValueError: invalid ids
    return errors.HfHubHTTPError, errors.HTTPError, OSError, ValueError


def _hub_error(exc: Exception, ref: HubRef, filename: str | None = None) -> CasaError:
    """One line saying which of missing / private / gated / offline / unreachable, and what to do."""
    from huggingface_hub import errors, get_token

    repo = ref.repo_id
    login = "set HF_TOKEN or run `hf auth login`"
    if isinstance(exc, errors.GatedRepoError):
        return CasaError(f"Hugging Face repo {repo} is gated: its licence must be accepted first",
                         f"accept it at https://huggingface.co/{repo} while logged in, then {login}")
    disabled = getattr(errors, "DisabledRepoError", None)
    if disabled is not None and isinstance(exc, disabled):
        return CasaError(f"Hugging Face repo {repo} has been disabled", "pick another repo")
    if isinstance(exc, errors.RepositoryNotFoundError):
        if get_token():
            return CasaError(f"Hugging Face repo {repo} does not exist, or your token cannot see it",
                             "check the spelling, and that the token has access to the repo")
        return CasaError(f"Hugging Face repo {repo} does not exist, or it is private (no token is set); "
                         "no local path of that name exists either", f"check the spelling; for a private repo {login}")
    if isinstance(exc, errors.RevisionNotFoundError):
        return CasaError(f"revision {ref.revision} does not exist in {repo}", "check the branch, tag or commit after @")
    if isinstance(exc, errors.LocalEntryNotFoundError) or isinstance(exc, errors.OfflineModeIsEnabled):
        if _offline():
            return CasaError(f"{filename or ref} is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                             "download it once while online, or unset HF_HUB_OFFLINE")
        return CasaError(f"cannot reach the Hugging Face hub for {filename or repo}, and it is not in the cache",
                         "check the connection or proxy, then try again")
    if isinstance(exc, errors.EntryNotFoundError):
        return CasaError(f"{repo} has no file {filename}", "check the repo's files")
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return CasaError(f"access to Hugging Face repo {repo} was refused (HTTP {status})",
                             f"check that your token can read it; {login}")
        if status == 429:
            return CasaError(f"the Hugging Face hub is rate-limiting requests for {repo}",
                             f"wait a few minutes, or {login}")
        return CasaError(f"the Hugging Face hub failed on {repo} (HTTP {status})", "try again later")
    short = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return CasaError(f"cannot reach the Hugging Face hub for {repo} ({short})",
                     "check the connection or proxy; with HF_HUB_OFFLINE=1 files already in the cache are used")
