"""Where a run may write, and how: never onto an input, always through a private temporary file.

``Protected`` is what the inputs occupy: their files (and, for links such as the Hugging Face
cache's, what they point at) and the folders given as inputs (a diffusers folder, a PEFT
folder, the folder of a sharded checkpoint's index). ``check_destination`` refuses a path
that would replace or land inside any of them, before any work. ``atomic_write`` writes
through a temporary file made with ``mkstemp`` beside the destination (an unpredictable name,
created exclusively, so a planted link is never followed), held under an advisory lock while
it is written, given the permissions any file the user makes gets (the umask's), then renamed
over the destination; a failure or a signal removes it. Temporary files left by a killed run
are removed by the next run that writes there, when no live run holds their lock.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CasaError

SUFFIX = ".part"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


@dataclass
class Protected:
    """The inputs' files and folders, resolved."""
    files: set[Path] = field(default_factory=set)
    folders: set[Path] = field(default_factory=set)

    def add_file(self, path) -> None:
        path = Path(path)
        self.files.add(Path(os.path.abspath(path)))
        self.files.add(_real(path))

    def add_folder(self, path) -> None:
        path = Path(path)
        self.folders.add(Path(os.path.abspath(path)))
        self.folders.add(_real(path))

    def clash(self, path: Path) -> str | None:
        """Why writing ``path`` would touch an input, or None."""
        for p in {Path(os.path.abspath(path)), _real(path)}:
            if p in self.files:
                return "is one of the inputs"
            for folder in self.folders:
                if p == folder or folder in p.parents:
                    return f"lies inside the input folder {folder}"
        return None


def check_destination(path, what: str, protected: Protected, *, setting: str | None = None,
                      others: Iterable[tuple[str, Path]] = ()) -> Path:
    """Refuse a destination that would overwrite an input or cannot be written; before any work.

    ``what`` names it in messages ("output", "report"); ``others`` are destinations of the same
    run it must not coincide with.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX") if parent.is_dir() else 255
    except (OSError, ValueError, AttributeError):
        limit = 255
    # the temporary file's name adds a dot, a random part and the suffix
    if len(os.fsencode(path.name)) + 1 + 10 + len(SUFFIX) > limit:
        raise CasaError(f"{what} file name is too long for this filesystem ({len(os.fsencode(path.name))} bytes; "
                        f"at most {limit - 11 - len(SUFFIX)})", "pick a shorter name", setting=setting)
    if path.is_dir():
        raise CasaError(f"{what} {path} is a folder", "give a file name", setting=setting)
    why = protected.clash(path)
    if why:
        raise CasaError(f"{what} {path} {why}", f"pick a {what} path outside the inputs", setting=setting)
    for name, other in others:
        if other is not None and _real(Path(other)) == _real(path):
            raise CasaError(f"{what} {path} is also the {name}", f"give the {what} a name of its own",
                            setting=setting)
    if not parent.is_dir():
        raise CasaError(f"{what} folder {parent} does not exist", f"create it or pick another {what} path",
                        setting=setting)
    try:  # a real probe: permissions, read-only mounts and full disks all show here
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError:
        raise CasaError(f"{what} folder {parent} cannot be written", "pick a folder you can write to",
                        setting=setting) from None
    return path


def atomic_write(path, write: Callable, what: str = "output") -> Path:
    """Write ``path`` through ``write(binary file)`` on a temporary file and a rename; nothing is
    left on failure. The file object writes to the descriptor ``mkstemp`` created: the temporary
    name is never opened again, so nothing planted there can be followed."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    remove_stale(parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=SUFFIX)
    tmp = Path(tmp)
    try:
        _lock(fd)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _MODE)
        with os.fdopen(os.dup(fd), "wb") as fh:
            write(fh)
        if os.name == "nt":   # Windows renames no open file
            os.close(fd)
            fd = -1
        os.replace(tmp, path)
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):
            raise CasaError(f"cannot write {what} {path}: {exc.strerror or exc}",
                            "check free disk space and permissions") from None
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    return path


def remove_stale(folder: Path, name: str) -> list[Path]:
    """Remove temporary files of ``name`` left in ``folder`` by runs that died (no live lock on them)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    prefix = f".{name}."
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(SUFFIX)):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            continue    # never a link, a folder or someone else's file
        try:
            fd = os.open(entry.path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if _try_lock(fd) and os.fstat(fd).st_ino == st.st_ino:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:   # Windows: an open file cannot be removed there anyway
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
