"""A run's learning curve from its stored episodes: per-episode success with its moving average (the
operator page's curve, `success_curve`), the before/after table and a PNG.

Before = the warm-up episodes (the pre-trained policy, no updates yet: the offline start); after =
the last `block` online episodes. The PNG shows every episode's outcome (success top, failure
bottom, warm-up and online in two colours), the moving average and the warm-up/online boundary.
Drawn with OpenCV, a dependency already, so every install writes it. Used by `parl-robot demo`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def success_curve(records: list[dict], window: int = 10) -> dict:
    """Per-episode success of non-demo episodes in id order, with a trailing moving average and
    per-phase rates (warm-up = the offline policy's evaluation, online = while fine-tuning)."""
    episodes = sorted((r for r in records if r.get("kind") != "demo" and not r.get("aborted")),
                      key=lambda r: r.get("episode_id", ""))
    points, outcomes = [], []
    for number, record in enumerate(episodes, start=1):
        outcomes.append(1.0 if record.get("success") else 0.0)
        recent = outcomes[-window:]
        points.append(
            {
                "n": number,
                "episode_id": record.get("episode_id"),
                "phase": record.get("phase") or "online",
                "success": bool(record.get("success")),
                "moving_average": sum(recent) / len(recent),
            }
        )
    phases = {}
    for point in points:
        phase = phases.setdefault(point["phase"], {"episodes": 0, "successes": 0})
        phase["episodes"] += 1
        phase["successes"] += int(point["success"])
    for phase in phases.values():
        phase["success_rate"] = phase["successes"] / phase["episodes"]
    return {"window": window, "points": points, "phases": phases}


def curve_summary(records: list[dict], block: int = 10) -> dict:
    """Success of the warm-up episodes (the offline start), of the first and the last `block` online
    episodes, and the gain (last block − offline start) in points."""
    points = success_curve(records)["points"]
    warmup = [p["success"] for p in points if p["phase"] == "warmup"]
    online = [p["success"] for p in points if p["phase"] == "online"]

    def rate(values: list[bool]) -> float | None:
        return float(np.mean(values)) if values else None

    start, last = rate(warmup), rate(online[-block:])
    return {
        "warmup_episodes": len(warmup), "online_episodes": len(online), "block": block,
        "offline_start": start, "first_online_block": rate(online[:block]), "last_online_block": last,
        "gain_points": None if start is None or last is None else round(100 * (last - start), 1),
    }


def summary_table(summary: dict) -> str:
    def cell(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.0f} %"

    block = summary["block"]
    gain = "–" if summary["gain_points"] is None else f"{summary['gain_points']:+.0f} points"
    return "\n".join([
        f"   {'':34s} {'episodes':>8s} {'success':>8s}",
        f"   {'before: warm-up (offline policy)':34s} {summary['warmup_episodes']:>8d} {cell(summary['offline_start']):>8s}",
        f"   {f'first {block} online':34s} {min(block, summary['online_episodes']):>8d} {cell(summary['first_online_block']):>8s}",
        f"   {f'after: last {block} online':34s} {min(block, summary['online_episodes']):>8d} {cell(summary['last_online_block']):>8s}",
        f"   gain (last {block} online − warm-up): {gain}",
    ])


def draw_learning_curve(records: list[dict], path: str | Path, window: int = 10, title: str = "") -> Path | None:
    """PNG of the run's curve; None (nothing written) when the run stored no labelled episode."""
    import cv2

    points = success_curve(records, window)["points"]
    if not points:
        return None
    width, height, left, right, top, bottom = 720, 360, 60, 20, 40, 50
    image = np.full((height, width, 3), 255, np.uint8)
    plot_w, plot_h = width - left - right, height - top - bottom
    count = len(points)

    def x(index: float) -> int:
        return int(left + plot_w * (index + 0.5) / count)

    def y(rate: float) -> int:
        return int(top + plot_h * (1.0 - rate))

    grey, black = (200, 200, 200), (40, 40, 40)
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        cv2.line(image, (left, y(level)), (width - right, y(level)), grey, 1)
        cv2.putText(image, f"{int(100 * level)}%", (8, y(level) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1, cv2.LINE_AA)
    warmup_count = sum(p["phase"] == "warmup" for p in points)
    if 0 < warmup_count < count:
        boundary = int(left + plot_w * warmup_count / count)
        cv2.line(image, (boundary, top), (boundary, top + plot_h), (120, 120, 120), 1, cv2.LINE_AA)
        cv2.putText(image, "warm-up | online", (max(left, boundary - 60), top + plot_h + 16), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, black, 1, cv2.LINE_AA)
    for index, point in enumerate(points):
        colour = (0, 108, 239) if point["phase"] == "warmup" else (192, 101, 21)  # BGR: orange / blue
        cv2.circle(image, (x(index), y(1.0 if point["success"] else 0.0)), 3, colour, -1, cv2.LINE_AA)
    line = np.array([[x(i), y(p["moving_average"])] for i, p in enumerate(points)], np.int32)
    cv2.polylines(image, [line], False, (50, 125, 46), 2, cv2.LINE_AA)
    cv2.putText(image, title or f"success per episode and its moving average over {window}", (left, 22),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(image, f"episode (1 to {count})", (left + plot_w // 2 - 60, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                black, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")
    return path
