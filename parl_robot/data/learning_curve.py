"""A run's learning curve from its stored episodes: the before/after table and a PNG.

Before = the warm-up episodes (the pre-trained policy, no updates yet: the offline start); after =
the last `block` online episodes. The PNG shows every episode's outcome (success top, failure
bottom, warm-up and online in two colours), the moving average and the warm-up/online boundary.
Drawn with OpenCV, a dependency already, so every install writes it. Used by `parl-robot demo`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run_episodes(records: list[dict]) -> list[dict]:
    """The run's labelled warm-up and online episodes in the order they were stored (no demos, no aborts)."""
    chosen = [r for r in records if r.get("kind") == "online" and not r.get("aborted") and r.get("label") in ("success", "failure")]
    return sorted(chosen, key=lambda r: (r.get("created", 0.0), r.get("episode_id", "")))


def curve_summary(records: list[dict], block: int = 10) -> dict:
    """Success of the warm-up episodes (the offline start), of the first and the last `block` online
    episodes, and the gain (last block − offline start) in points."""
    episodes = run_episodes(records)
    warmup = [bool(r["success"]) for r in episodes if r.get("phase") == "warmup"]
    online = [bool(r["success"]) for r in episodes if r.get("phase") == "online"]

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

    episodes = run_episodes(records)
    if not episodes:
        return None
    width, height, left, right, top, bottom = 720, 360, 60, 20, 40, 50
    image = np.full((height, width, 3), 255, np.uint8)
    plot_w, plot_h = width - left - right, height - top - bottom
    count = len(episodes)

    def x(index: float) -> int:
        return int(left + plot_w * (index + 0.5) / count)

    def y(rate: float) -> int:
        return int(top + plot_h * (1.0 - rate))

    grey, black = (200, 200, 200), (40, 40, 40)
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        cv2.line(image, (left, y(level)), (width - right, y(level)), grey, 1)
        cv2.putText(image, f"{int(100 * level)}%", (8, y(level) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1, cv2.LINE_AA)
    warmup_count = sum(r.get("phase") == "warmup" for r in episodes)
    if 0 < warmup_count < count:
        boundary = int(left + plot_w * warmup_count / count)
        cv2.line(image, (boundary, top), (boundary, top + plot_h), (120, 120, 120), 1, cv2.LINE_AA)
        cv2.putText(image, "warm-up | online", (max(left, boundary - 60), top + plot_h + 16), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, black, 1, cv2.LINE_AA)
    successes = np.array([bool(r["success"]) for r in episodes], float)
    for index, record in enumerate(episodes):
        colour = (0, 108, 239) if record.get("phase") == "warmup" else (192, 101, 21)  # BGR: orange / blue
        cv2.circle(image, (x(index), y(1.0 if record["success"] else 0.0)), 3, colour, -1, cv2.LINE_AA)
    average = [successes[max(0, i - window + 1): i + 1].mean() for i in range(count)]
    points = np.array([[x(i), y(a)] for i, a in enumerate(average)], np.int32)
    cv2.polylines(image, [points], False, (50, 125, 46), 2, cv2.LINE_AA)
    cv2.putText(image, title or f"success per episode and its moving average over {window}", (left, 22),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(image, f"episode (1 to {count})", (left + plot_w // 2 - 60, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                black, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")
    return path
