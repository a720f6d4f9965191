"""A Horovod timeline, summarised: wall time per training step in each of Horovod's activities.

Horovod writes a Chrome trace (`HOROVOD_TIMELINE=PATH`, viewable in chrome://tracing) with a
begin and an end event per tensor and activity (NEGOTIATE_ALLREDUCE, ALLREDUCE,
MEMCPY_IN_FUSION_BUFFER, ...). Tensors fused into one operation have overlapping spans, so
the spans of each activity are merged before they are summed. benchmarks.scaling --timeline
records one (`record_timeline`) and takes the cost model's fusion-buffer copy time γ from it.

    python -c "from benchmarks.timeline import summarise_timeline as s; print(s('tl.json', 15))"
"""
from __future__ import annotations

import json
from pathlib import Path


def _union(spans: list[tuple[float, float]]) -> tuple[float, int]:
    """Total length and count of the merged intervals of `spans`."""
    total, count, end = 0.0, 0, float("-inf")
    for a, b in sorted(spans):
        if a > end:
            count += 1
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total, count


def summarise_timeline(path: Path, steps: int) -> dict:
    """Horovod timeline (Chrome trace JSON) -> per step: wall ms in each activity (spans of all
    tensors merged, so fused tensors count once) and how many merged spans (operations)."""
    text = Path(path).read_text().strip().rstrip(",")
    if not text.endswith("]"):
        text += "]"
    open_: dict[tuple, list[tuple[str, float]]] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    for ev in json.loads(text):
        key = (ev.get("pid"), ev.get("tid"))
        if ev.get("ph") == "B":
            open_.setdefault(key, []).append((ev.get("name", "?"), float(ev["ts"])))
        elif ev.get("ph") == "E" and open_.get(key):
            name, start = open_[key].pop()
            spans.setdefault(name, []).append((start / 1e3, float(ev["ts"]) / 1e3))
    merged = {name: _union(s) for name, s in spans.items()}
    order = sorted(merged, key=lambda n: -merged[n][0])
    return {"steps": steps, "ms_per_step": {n: merged[n][0] / steps for n in order},
            "ops_per_step": {n: merged[n][1] / steps for n in order},
            "tensor_events_per_step": {n: len(spans[n]) / steps for n in order}}
