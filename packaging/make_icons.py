"""Draw the CASA Studio icon into resources/icons/ (PNG sizes and a Windows .ico).

Run by hand when the design changes (needs Pillow); the outputs are committed, so
builds never depend on Pillow. The motif: a singular-value spectrum (bars falling
off) carried across by an arc, on a rounded dark tile.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
BG_TOP, BG_BOTTOM = (28, 44, 78), (12, 20, 38)
BAR_A, BAR_B, ARC = (94, 196, 255), (255, 170, 72), (236, 240, 248)


def draw(size: int = 1024) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    # Vertical gradient clipped to a rounded square.
    grad = Image.new("RGBA", (size, size))
    gd = ImageDraw.Draw(grad)
    for y in range(size):
        t = y / (size - 1)
        rgb = tuple(round(a + (b - a) * t) for a, b in zip(BG_TOP, BG_BOTTOM, strict=True))
        gd.line([(0, y), (size, y)], fill=rgb + (255,))
    mask = Image.new("L", (size, size), 0)
    m = size // 16
    ImageDraw.Draw(mask).rounded_rectangle([m, m, size - m, size - m], radius=size // 5, fill=255)
    img.paste(grad, (0, 0), mask)

    d = ImageDraw.Draw(img)
    heights = [0.44, 0.33, 0.25, 0.19, 0.14, 0.10]
    left, bottom, step, width = 0.20 * size, 0.80 * size, 0.105 * size, 0.075 * size
    for i, h in enumerate(heights):
        x0 = left + i * step
        colour = BAR_A if i < 3 else BAR_B
        d.rounded_rectangle([x0, bottom - h * size, x0 + width, bottom], radius=size // 60, fill=colour)
    # The transfer arc over the spectrum, ending in an arrowhead along its tangent.
    cx, cy, r, a0, a1 = 0.52 * size, 0.50 * size, 0.33 * size, 205, 325
    d.arc([cx - r, cy - r, cx + r, cy + r], start=a0, end=a1, fill=ARC, width=size // 28)
    t = math.radians(a1)
    ex, ey = cx + r * math.cos(t), cy + r * math.sin(t)
    tx, ty, nx, ny, s = -math.sin(t), math.cos(t), math.cos(t), math.sin(t), 0.07 * size
    d.polygon([(ex + tx * s, ey + ty * s), (ex - tx * s * 0.3 + nx * s * 0.8, ey - ty * s * 0.3 + ny * s * 0.8),
               (ex - tx * s * 0.3 - nx * s * 0.8, ey - ty * s * 0.3 - ny * s * 0.8)], fill=ARC)
    return img


def main() -> None:
    ICONS.mkdir(parents=True, exist_ok=True)
    big = draw()
    for px in (16, 32, 48, 64, 128, 256, 512):
        big.resize((px, px), Image.LANCZOS).save(ICONS / f"casa-studio-{px}.png", optimize=True)
    big.resize((256, 256), Image.LANCZOS).save(ICONS / "casa-studio.png", optimize=True)
    big.resize((256, 256), Image.LANCZOS).save(
        ICONS / "casa-studio.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])


if __name__ == "__main__":
    main()
