"""The golden-case checker: convert a case with the real `casa convert` and compare what the output applies.

A golden case is a folder with the inputs, ``case.json`` (which inputs, the extra CLI arguments, and
per layer the key prefix that module has in the input LoRA) and ``expected.safetensors`` (the dense
update ``D_casa`` every transferred layer must apply to the target, by canonical module name). How the
cases were made, and against what, is in ``tests/golden/README.md``.

The comparison is on updates, never on factors: the factors of one update are not unique (any
invertible ``M`` gives ``B M``, ``M^-1 A``), and the output may be in any layout. Per output layer the
update is ``s * B @ A`` with ``s = alpha / rank`` where the file carries an ``.alpha`` key and ``s = 1``
where it does not (ComfyUI and diffusers outputs fold the scale into the factors and carry no alpha;
kohya outputs carry ``alpha = rank``; see the README's command-line section). Keys the case lists
under ``passthrough`` must come out byte-identical: same dtype, same shape, same bytes.

    python -m tests.core.golden CASE_DIR... [--precision float64|float32|auto]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import case_target_loras

# (down, up) suffixes of a LoRA pair; the update of a layer is up @ down.
PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"))
TOLERANCE = {"float64": 1e-6}  # every other precision (float32, auto = float32): DEFAULT_TOLERANCE
DEFAULT_TOLERANCE = 2e-2


@dataclass
class Verdict:
    """What one case gave: the relative error of each layer and every other problem found."""

    case: str
    precision: str | None
    tolerance: float
    errors: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(e <= self.tolerance for e in self.errors.values())

    def summary(self) -> str:
        if self.errors:
            worst = max(self.errors, key=self.errors.get)
            line = f"worst relative error {self.errors[worst]:.2e} at {worst} (tolerance {self.tolerance:g})"
        else:
            line = "no layer compared"
        over = sorted((e, m) for m, e in self.errors.items() if e > self.tolerance)
        if over:
            line += f"; {len(over)} layer(s) over tolerance: " + ", ".join(f"{m} {e:.2e}" for e, m in over[-5:])
        if self.problems:
            line += "; " + "; ".join(self.problems[:5])
            if len(self.problems) > 5:
                line += f"; and {len(self.problems) - 5} more"
        return line


def tolerance(precision: str | None) -> float:
    return TOLERANCE.get(precision or "auto", DEFAULT_TOLERANCE)


def applied_updates(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Key prefix -> the float64 dense update that LoRA pair applies, its alpha / rank scale included."""
    updates = {}
    for key, down in tensors.items():
        for down_suffix, up_suffix in PAIRS:
            if not key.endswith(down_suffix):
                continue
            prefix = key[: -len(down_suffix)]
            up = tensors.get(prefix + up_suffix)
            if up is None:
                continue
            rank = down.shape[0]
            alpha = tensors.get(prefix + ".alpha")
            scale = float(alpha) / rank if alpha is not None else 1.0
            updates[prefix] = scale * (up.double().flatten(1) @ down.double().flatten(1))
    return updates


def convert_command(case_dir: Path, spec: dict, output: Path, precision: str | None,
                    casa: list[str] | None = None) -> list[str]:
    """The `casa convert` command line for one case, on the CPU."""
    cmd = list(casa or [sys.executable, "-m", "casa_core"]) + ["convert", "--base", str(case_dir / spec["base"])]
    if spec.get("target"):
        cmd += ["--target", str(case_dir / spec["target"])]
    # a target given as the base (``target: null``) or a checkpoint, plus distillation LoRAs: one file
    # (``target_lora``, ``target_lora_strength``) or a list of each, stacked in that order
    for path, strength in case_target_loras(case_dir, spec):
        cmd += ["--target-lora", str(path) if strength == 1.0 else f"{path}:{strength!r}"]
    cmd += ["--lora", str(case_dir / spec["lora"]), "--output", str(output), "--device", "cpu", "--quiet"]
    cmd += list(spec.get("args", []))
    if precision:
        cmd += ["--precision", precision]
    return cmd


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().flatten().view(torch.uint8), b.contiguous().flatten().view(torch.uint8))


def compare(case_dir: Path, written: dict[str, torch.Tensor], precision: str | None) -> Verdict:
    """Judge one converted output (its tensors) against the case's expected updates and pass-through keys."""
    spec = json.loads((case_dir / "case.json").read_text())
    expected = load_file(str(case_dir / "expected.safetensors"))
    source = load_file(str(case_dir / spec["lora"]))
    verdict = Verdict(case_dir.name, precision, tolerance(precision))
    got = applied_updates(written)

    listed = {info["lora_prefix"] for info in spec["layers"].values()}
    for module, info in spec["layers"].items():
        prefix = info["lora_prefix"]
        if module not in expected:
            verdict.problems.append(f"{module}: not in expected.safetensors (a broken case)")
            continue
        want = expected[module].double()
        if prefix not in got:
            verdict.problems.append(f"{module}: no LoRA pair under {prefix} in the output")
            continue
        if got[prefix].numel() != want.numel():
            verdict.problems.append(f"{module}: update of shape {tuple(got[prefix].shape)}, "
                                    f"expected {tuple(want.shape)}")
            continue
        diff = (got[prefix].reshape(want.shape) - want).norm().item()
        size = want.norm().item()
        verdict.errors[module] = diff / size if size > 0 else diff

    passthrough = spec.get("passthrough", [])
    for key in passthrough:
        if key not in written:
            verdict.problems.append(f"pass-through key {key} missing from the output")
        elif not _same_bytes(written[key], source[key]):
            verdict.problems.append(f"pass-through key {key} changed")
    # A layer the case neither transfers nor passes through must not appear in the output.
    suffixes = [s for pair in PAIRS for s in pair]
    passed_prefixes = {k[: -len(s)] for k in passthrough for s in suffixes if k.endswith(s)}
    extra = sorted(p for p in got if p not in listed and p not in passed_prefixes)
    if extra:
        verdict.problems.append(f"the output adapts layers the case does not list: {', '.join(extra[:3])}")
    return verdict


def check(case_dir: Path, precision: str | None, casa: list[str] | None = None, timeout: float = 600) -> Verdict:
    """Run `casa convert` on the case in a temporary folder and judge what it wrote."""
    case_dir = Path(case_dir).resolve()
    spec = json.loads((case_dir / "case.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.safetensors"
        cmd = convert_command(case_dir, spec, out, precision, casa)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        if proc.returncode != 0 or not out.is_file():
            verdict = Verdict(case_dir.name, precision, tolerance(precision))
            tail = (proc.stderr or proc.stdout).strip()[-400:]
            verdict.problems.append(f"`casa convert` failed (exit {proc.returncode}): {tail}")
            return verdict
        written = load_file(str(out))
    return compare(case_dir, written, precision)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.core.golden", description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="+", type=Path)
    ap.add_argument("--precision", default="float64", help="float64 (tolerance 1e-6), float32 or auto (2e-2)")
    a = ap.parse_args(argv)
    failed = 0
    for case in a.cases:
        v = check(case, None if a.precision == "auto" else a.precision)
        failed += not v.ok
        print(f"{'PASS' if v.ok else 'FAIL'} {v.case}: {v.summary()}")
    print(f"{len(a.cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
