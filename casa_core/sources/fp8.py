"""fp8 weights (``float8_e4m3fn``, ``float8_e5m2``) and "scaled" fp8 files, dequantised to float32.

ComfyUI's scaled files store ``W / s`` in fp8 and the per-tensor scale ``s`` beside the
weight (``<module>.scale_weight``; other tools write ``<module>.weight_scale``), plus an
input scale and a ``scaled_fp8`` marker that only matter at inference. The scales are
consumed here: they never show up as model tensors of their own.
"""

from __future__ import annotations

from ..errors import CasaError

WEIGHT_SCALES = ("scale_weight", "weight_scale")
# inference-only entries of scaled files: consumed, not model tensors
IGNORED = ("scale_input", "input_scale", "scaled_fp8")


def split_scales(keys) -> tuple[dict[str, str], set[str]]:
    """(weight key -> its scale key, every key that belongs to the quantisation, not the model)."""
    keys = set(keys)
    scales: dict[str, str] = {}
    consumed: set[str] = set()
    for key in keys:
        module, _, last = key.rpartition(".")
        if last in WEIGHT_SCALES:
            weight = f"{module}.weight" if module else "weight"
            if weight in keys:
                scales[weight] = key
                consumed.add(key)
        elif last in IGNORED:
            consumed.add(key)
    return scales, consumed


def dequantise(weight, scale=None, *, name: str = "weight"):
    """float32 ``weight * scale``; a scale is a scalar or one value per output row."""
    import torch

    w = weight.to(torch.float32)
    if scale is None:
        return w
    s = scale.to(torch.float32)
    if s.numel() == 1:
        return w * s.reshape(())
    if w.dim() >= 1 and s.numel() == w.shape[0]:
        return w * s.reshape(w.shape[0], *([1] * (w.dim() - 1)))
    raise CasaError(f"fp8 scale of {name} has {s.numel()} values for a weight of shape {list(w.shape)}",
                    "this scaled fp8 layout is not supported; use the bf16/fp16 release of the model")
