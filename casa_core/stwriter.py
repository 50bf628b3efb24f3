"""A deterministic safetensors writer.

safetensors' own ``save_file`` serialises ``__metadata__`` from a hash map whose
order changes from one process to the next, so the same tensors and metadata give
different bytes. Here the header is written with sorted keys, so the same inputs
always give the same file.
"""

from __future__ import annotations

import json

from . import dtypes


def write(tensors: dict, fh, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> CPU torch tensor) to the binary file object ``fh`` in the safetensors format."""
    import torch

    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    offset = 0
    order = sorted(tensors)
    for name in order:
        t = tensors[name]
        n = t.numel() * t.element_size()
        header[name] = {"dtype": dtypes.tag(t.dtype), "shape": list(t.shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    fh.write(len(blob).to_bytes(8, "little"))
    fh.write(blob)
    for name in order:
        t = tensors[name].detach().contiguous().cpu()
        fh.write(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
