"""No write lands on an input; temporary files are private, cleaned up, and have ordinary permissions."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casa_core import cli
from casa_core.outputs import SUFFIX, Protected, atomic_write, check_destination, remove_stale
from tests.core import factories as f


def _digest_tree(folder: Path) -> dict:
    import hashlib

    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inputs(tmp_path):
    """A copy of the demo: base file, diffusers target folder, LoRA file."""
    return f.demo_copy(tmp_path)


def _convert(src, *extra):
    return cli.main(["convert", "--base", str(src / "base.safetensors"), "--target", str(src / "target"),
                     "--lora", str(src / "lora.safetensors"), "-q", "--device", "cpu", *extra])


@pytest.mark.parametrize("where", [
    ["--output", "{in}/lora.safetensors"],
    ["--output", "{in}/target/model_index.json"],
    ["--output", "{in}/target/transformer/config.json"],
    ["--output", "{in}/target/new.safetensors"],
    ["--output", "{tmp}/o.safetensors", "--report", "{in}/lora.safetensors"],
    ["--output", "{tmp}/o.safetensors", "--report", "{in}/target/model_index.json"],
    ["--output", "{tmp}/o.safetensors", "--report", "{tmp}/o.safetensors"],
], ids=["output-is-lora", "output-is-model_index", "output-is-config", "output-inside-target-folder",
        "report-is-lora", "report-in-target-folder", "report-is-output"])
def test_no_write_lands_on_an_input(inputs, tmp_path, capsys, where):
    before = _digest_tree(inputs)
    args = [a.format(**{"in": inputs, "tmp": tmp_path}) for a in where]
    assert _convert(inputs, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("casa: error: "), err
    assert _digest_tree(inputs) == before
    assert not (tmp_path / "o.safetensors").exists()
    assert not list(tmp_path.rglob(f"*{SUFFIX}"))


def test_a_link_to_an_input_is_refused(inputs, tmp_path, capsys):
    link = tmp_path / "innocent.safetensors"
    link.symlink_to(inputs / "lora.safetensors")
    before = _digest_tree(inputs)
    assert _convert(inputs, "--output", str(link)) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert _digest_tree(inputs) == before and link.is_symlink()


def test_written_files_have_the_umasks_permissions(inputs, tmp_path):
    out, rep = tmp_path / "o.safetensors", tmp_path / "r.json"
    assert _convert(inputs, "--output", str(out), "--report", str(rep)) == 0
    mask = os.umask(0)
    os.umask(mask)
    for p in (out, rep):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p
    assert not list(tmp_path.glob(f".*{SUFFIX}"))


def test_temporary_names_are_unpredictable_and_planted_links_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "o.json"
    # the name the old writer used, and a few guesses: links to the victim
    for name in (f".{out.name}.part", f".{out.name}.00000000{SUFFIX}"):
        (tmp_path / name).symlink_to(victim)
    names = set()

    def write(fh):
        names.add(Path(fh.name).name if isinstance(fh.name, str) else fh.name)
        fh.write(b"{}")

    atomic_write(out, write)
    atomic_write(out, write)
    assert victim.read_text() == "keep" and out.read_bytes() == b"{}"
    assert all((tmp_path / n).is_symlink() for n in (f".{out.name}.part", f".{out.name}.00000000{SUFFIX}"))


def test_a_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "o.bin"

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(out, boom)
    assert list(tmp_path.iterdir()) == []


def test_a_stale_part_is_removed_but_not_a_live_one(tmp_path):
    import fcntl

    out = tmp_path / "o.safetensors"
    stale = tmp_path / f".{out.name}.abc123{SUFFIX}"
    stale.write_bytes(b"left by a killed run")
    live = tmp_path / f".{out.name}.def456{SUFFIX}"
    live.write_bytes(b"being written")
    other = tmp_path / f".other.safetensors.xyz{SUFFIX}"
    other.write_bytes(b"not ours")
    fd = os.open(live, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)        # a run still writing holds its lock
    try:
        removed = remove_stale(tmp_path, out.name)
    finally:
        os.close(fd)
    assert removed == [stale] and live.exists() and other.exists()


def test_two_reports_to_one_path_do_not_collide(tmp_path):
    """Two writers at once: each through its own temporary file; the last rename wins, whole."""
    import threading

    out = tmp_path / "r.json"
    barrier = threading.Barrier(2)

    def writer(blob):
        def write(fh):
            barrier.wait()
            fh.write(blob)
        atomic_write(out, write)

    ts = [threading.Thread(target=writer, args=(b"A" * 100_000,)), threading.Thread(target=writer, args=(b"B" * 10,))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out.read_bytes() in (b"A" * 100_000, b"B" * 10)
    assert not list(tmp_path.glob(f".*{SUFFIX}"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signals_clean_up_like_ctrl_c(inputs, tmp_path, sig):
    """Killed mid-run, the CLI exits with the signal's status, leaving no output or temporary file."""
    out = tmp_path / "o.safetensors"
    code = ("import sys, time\n"
            "from casa_core import cli, outputs\n"
            "real = outputs.atomic_write\n"
            "def slow(path, write, what='output'):\n"
            "    def w(fh):\n"
            "        write(fh); fh.flush(); print('writing', flush=True); time.sleep(60)\n"
            "    return real(path, w, what)\n"
            "outputs.atomic_write = slow\n"
            f"sys.exit(cli.main(['convert', '--base', {str(inputs / 'base.safetensors')!r}, "
            f"'--target', {str(inputs / 'target')!r}, '--lora', {str(inputs / 'lora.safetensors')!r}, "
            f"'-q', '--device', 'cpu', '-o', {str(out)!r}]))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    assert list(tmp_path.glob(f".*{SUFFIX}"))      # the temporary file exists now
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig, err
    assert "cancelled; nothing was written" in err
    assert not out.exists() and not list(tmp_path.glob(f".*{SUFFIX}"))


def test_an_output_name_too_long_is_refused_before_the_work(inputs, tmp_path, capsys):
    name = "x" * 250 + ".safetensors"
    t0 = time.perf_counter()
    assert _convert(inputs, "--output", str(tmp_path / name)) == 2
    err = capsys.readouterr().err
    assert "too long for this filesystem" in err and "(--output)" in err
    assert time.perf_counter() - t0 < 5


def test_protected_folders_cover_everything_inside(tmp_path):
    prot = Protected()
    prot.add_folder(tmp_path / "model")
    assert prot.clash(tmp_path / "model" / "deep" / "x.safetensors")
    assert prot.clash(tmp_path / "model")
    assert prot.clash(tmp_path / "model-other.safetensors") is None
    with pytest.raises(Exception, match="lies inside the input folder"):
        check_destination(tmp_path / "model" / "x", "output", prot)


@pytest.mark.parametrize("value", ["yesterday", "1.5e9", "9" * 30])
def test_an_unusable_source_date_epoch_is_refused_before_the_work(inputs, tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    out = tmp_path / "o.safetensors"
    assert _convert(inputs, "--output", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SOURCE_DATE_EPOCH=" in err[0] and "Unix timestamp" in err[0], err
    assert not out.exists()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    assert _convert(inputs, "--output", str(out)) == 0
    from safetensors import safe_open

    with safe_open(str(out), "pt") as fh:
        assert fh.metadata()["modelspec.date"] == "2026-01-01"
