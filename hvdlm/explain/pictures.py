"""Pictures for the report page, made here with no plotting library: heatmaps as inline PNG
(data: URLs, written by `png` with zlib) and charts as inline SVG. Nothing refers outside the
page."""
from __future__ import annotations

import base64
import html
import struct
import zlib
from typing import Sequence

import numpy as np

WHITE, BLUE, RED = np.array([255, 255, 255]), np.array([33, 82, 165]), np.array([190, 30, 45])
PALETTE = ("#2152a5", "#be1e2d", "#2f8f46", "#c77c0e", "#6b3fa0", "#0f8b8d", "#7a7a7a")


def png(rgb: np.ndarray) -> bytes:
    """A PNG file of an (H, W, 3) uint8 image (8-bit RGB, no filter, zlib)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].astype(np.uint8).tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def heatmap(values: np.ndarray, vmax: float | None = None, gamma: float = 1.0) -> np.ndarray:
    """White (0) to blue (vmax) image of a 2-D array of values >= 0; gamma < 1 lifts small ones."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    top = vmax if vmax is not None else max(float(values.max()), 1e-12)
    t = np.clip(values / top, 0.0, 1.0) ** gamma
    return (WHITE + t[..., None] * (BLUE - WHITE)).round().astype(np.uint8)


def img(rgb: np.ndarray, width: int, height: int, title: str = "") -> str:
    """An <img> of the image, scaled without smoothing, as a data: URL."""
    data = base64.b64encode(png(rgb)).decode("ascii")
    return (f'<img class="map" width="{width}" height="{height}" title="{html.escape(title)}" '
            f'alt="{html.escape(title)}" src="data:image/png;base64,{data}">')


def surprisal_colour(bits: float, top: float = 12.0) -> str:
    """Background of a token: pale yellow (0 bits) through orange to red (`top` bits or more)."""
    t = min(max(bits / top, 0.0), 1.0)
    return f"hsl({50 - 50 * t:.0f}, 95%, {95 - 40 * t:.0f}%)"


def signed_colour(value: float, scale: float) -> str:
    """Red for positive, blue for negative, white for zero, full at |value| = scale."""
    t = min(abs(value) / max(scale, 1e-12), 1.0)
    rgb = (WHITE + t * ((RED if value > 0 else BLUE) - WHITE)).round().astype(int)
    return f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})"


def _frame(width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float],
           x_label: str, y_label: str, pad: int = 40):
    """SVG header, axes with end labels, and a function mapping data to pixels."""
    (x0, x1), (y0, y1) = x_range, y_range
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        return (pad + (x - x0) / (x1 - x0) * (width - pad - 10),
                height - pad + 10 - (y - y0) / (y1 - y0) * (height - pad))

    left, bottom = pad, height - pad + 10
    parts = [f'<svg class="chart" width="{width}" '
             f'height="{height + 10}" viewBox="0 0 {width} {height + 10}">',
             f'<line x1="{left}" y1="10" x2="{left}" y2="{bottom}" stroke="#444"/>',
             f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#444"/>',
             f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{_num(y0)}</text>',
             f'<text x="{left - 4}" y="18" text-anchor="end">{_num(y1)}</text>',
             f'<text x="{left}" y="{bottom + 14}">{_num(x0)}</text>',
             f'<text x="{width - 10}" y="{bottom + 14}" text-anchor="end">{_num(x1)}</text>',
             f'<text x="{(left + width) / 2}" y="{bottom + 26}" text-anchor="middle">'
             f'{html.escape(x_label)}</text>',
             f'<text x="12" y="{(10 + bottom) / 2}" text-anchor="middle" transform="rotate(-90 '
             f'12 {(10 + bottom) / 2})">{html.escape(y_label)}</text>']
    return parts, at


def lines(series: dict[str, Sequence[float | None]], x_label: str, y_label: str,
          width: int = 360, height: int = 180, y_range: tuple[float, float] | None = None,
          x: Sequence[float] | None = None, diagonal: bool = False) -> str:
    """A line chart of one or more series (None leaves a gap), with a legend."""
    n = max((len(v) for v in series.values()), default=1)
    xs = list(x) if x is not None else list(range(n))
    found = [v for s in series.values() for v in s if v is not None]
    lo, hi = y_range if y_range else (min(found, default=0.0), max(found, default=1.0))
    parts, at = _frame(width, height, (min(xs, default=0), max(xs, default=1)), (lo, hi),
                       x_label, y_label)
    if diagonal:
        (ax, ay), (bx, by) = at(lo, lo), at(hi, hi)
        parts.append(f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by:.1f}" '
                     'stroke="#aaa" stroke-dasharray="4 3"/>')
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        points = [at(xv, yv) for xv, yv in zip(xs, values) if yv is not None]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{path}"><title>{html.escape(name)}</title></polyline>')
        if len(points) <= 20:
            parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>'
                      for px, py in points]
        if len(series) > 1:
            parts.append(f'<text x="{width - 12}" y="{22 + 13 * k}" text-anchor="end" '
                         f'fill="{colour}">{html.escape(name)}</text>')
    return "\n".join(parts + ["</svg>"])


def bars(edges: Sequence[float], counts: Sequence[int], x_label: str, y_label: str,
         width: int = 360, height: int = 180) -> str:
    """A histogram: one bar per bin [edges[i], edges[i+1])."""
    parts, at = _frame(width, height, (edges[0], edges[-1]), (0, max(max(counts, default=1), 1)),
                       x_label, y_label)
    for a, b, c in zip(edges[:-1], edges[1:], counts):
        (x0, y0), (x1, y1) = at(a, c), at(b, 0)
        parts.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
                     f'height="{y1 - y0:.1f}" fill="{PALETTE[0]}"><title>{_num(a)}–{_num(b)}: '
                     f'{c}</title></rect>')
    return "\n".join(parts + ["</svg>"])


def _num(v: float) -> str:
    return f"{v:.3g}"
