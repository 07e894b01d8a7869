"""Capturing calibration data: chessboard frames for the intrinsics, and camera frames with the
measured end-effector position for the extrinsics (`calibrate capture` / `calibrate collect`).

Both loops take the camera as a `grab_frame()` callable (RGB frame at the camera's capture size)
and the clock as a `wait(seconds)` callable, so they run the same on the real arm and camera, on the
MuJoCo twin, and in tests. The arm is any `robot.backend.ArmBackend`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from parl_robot.perception.calibration import ExtrinsicSamples, MarkerSample, find_chessboard, read_array, read_yaml_mapping
from parl_robot.robot.backend import ArmBackend
from parl_robot.robot.safety import DOWNWARD_ROTATION, EECommand
from parl_robot.robot.workspace import reachable_at

SAMPLES_FILE = "samples.yaml"
POLL_PERIOD_S = 0.1


def save_png(path: Path, image_rgb: np.ndarray) -> Path:
    if not cv2.imwrite(str(path), np.ascontiguousarray(image_rgb[:, :, ::-1])):
        raise OSError(f"cannot write image {path}")
    return path


# ----- intrinsics: chessboard frames ----------------------------------------------------------
def capture_board_images(
    grab_frame: Callable[[], np.ndarray],
    out_dir: str | Path,
    count: int,
    board: tuple[int, int],
    interval_s: float = 2.0,
    max_frames: int | None = None,
    wait: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = print,
) -> list[Path]:
    """Save `count` full-resolution frames in which the chessboard is found (`board_000.png`, ...),
    one every `interval_s` at most, so the operator can move the board between views."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    for frame_index in range(max_frames or 5 * count):
        if len(saved) == count:
            break
        frame = grab_frame()
        if find_chessboard(frame, board) is None:
            report(f"frame {frame_index}: no {board[0]}x{board[1]} chessboard found; show the whole board")
            wait(POLL_PERIOD_S)
            continue
        saved.append(save_png(out_dir / f"board_{len(saved):03d}.png", frame))
        report(f"saved {saved[-1]} ({frame.shape[1]}x{frame.shape[0]}); {count - len(saved)} to go: tilt and move the board")
        wait(interval_s)
    return saved


# ----- extrinsics: the arm's pose grid --------------------------------------------------------
def calibration_targets(box_low, box_high, grid: tuple[int, int, int] = (3, 3, 2), margin_m: float = 0.03) -> np.ndarray:
    """(N, 3) gripper positions on a grid over the box inset by `margin_m`, in a serpentine order
    (each target next to the previous one, so the IK seeded with the current joints finds it)."""
    low = np.asarray(box_low, float) + margin_m
    high = np.asarray(box_high, float) - margin_m
    if np.any(high <= low):
        raise ValueError(f"the box {np.round(box_low, 3).tolist()}..{np.round(box_high, 3).tolist()} is too small for a {margin_m} m margin")
    xs, ys, zs = (np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2]) for lo, hi, n in zip(low, high, grid))
    targets = []
    for k, z in enumerate(zs):
        for i, x in enumerate(xs if k % 2 == 0 else xs[::-1]):
            for y in ys if (i + k) % 2 == 0 else ys[::-1]:
                targets.append([x, y, z])
    return np.array(targets)


def load_pose_list(path: str | Path) -> np.ndarray:
    """(N, 3) gripper positions from `{poses: [[x, y, z], ...]}`."""
    data = read_yaml_mapping(path, "pose list")
    count = len(data["poses"]) if isinstance(data.get("poses"), list) else 0
    return read_array(path, data, "poses", (count, 3))


@dataclass
class PoseResult:
    target: np.ndarray  # (3,) commanded
    status: str  # "recorded", "unreachable" (no IK before moving), "refused" (execute returned False), "not settled"
    measured: np.ndarray | None = None  # (3,) end-effector position the arm reports
    image: Path | None = None


def _settle(backend: ArmBackend, wait, settle_s: float, tolerance_m: float, timeout_s: float) -> np.ndarray | None:
    """The measured position once two readings POLL_PERIOD_S apart agree within `tolerance_m`."""
    wait(settle_s)
    previous = backend.ee_pose()[0]
    for _ in range(max(1, int(round(timeout_s / POLL_PERIOD_S)))):
        wait(POLL_PERIOD_S)
        current = backend.ee_pose()[0]
        if np.linalg.norm(current - previous) < tolerance_m:
            return current
        previous = current
    return None


def collect_marker_samples(
    backend: ArmBackend,
    grab_frame: Callable[[], np.ndarray],
    targets: np.ndarray,
    out_dir: str | Path,
    marker_offset=(0.0, 0.0, 0.0),
    gripper_open: bool = False,
    move_time_s: float = 0.5,
    max_step_m: float = 0.03,
    settle_s: float = 0.5,
    settle_tolerance_m: float = 0.0005,
    settle_timeout_s: float = 5.0,
    wait: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = print,
) -> tuple[Path, list[PoseResult]]:
    """Move the downward gripper to each target in straight steps of at most `max_step_m`, wait
    until it is still, and record the frame (`sample_<i>.png`) with the MEASURED end-effector
    position into `out_dir/samples.yaml` (the `calibrate extrinsics` format; rewritten after every
    sample so an interrupted run keeps what it has; not written when nothing was recorded). Targets the API's IK cannot reach from its
    default seeds are skipped before moving; a refused step (execute returns False) skips the target."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples_path = out_dir / SAMPLES_FILE
    collected = ExtrinsicSamples([], np.asarray(marker_offset, float))
    targets = np.asarray(targets, float).reshape(-1, 3)
    reachable = reachable_at(targets, (0.0,))[:, 0]
    results: list[PoseResult] = []
    for index, target in enumerate(targets):
        if not reachable[index]:
            results.append(PoseResult(target, "unreachable"))
            report(f"pose {index}: {np.round(target, 3).tolist()} has no IK solution within the joint limits; skipped")
            continue
        start = backend.ee_pose()[0]
        steps = max(1, int(np.ceil(np.linalg.norm(target - start) / max_step_m)))
        refused = False
        for step in range(1, steps + 1):
            waypoint = start + (target - start) * step / steps
            if not backend.execute(EECommand(waypoint, DOWNWARD_ROTATION, gripper_open), move_time_s):
                refused = True
                break
            wait(move_time_s)
        if refused:
            results.append(PoseResult(target, "refused"))
            report(f"pose {index}: the arm refused {np.round(waypoint, 3).tolist()} on the way to {np.round(target, 3).tolist()}; skipped")
            continue
        measured = _settle(backend, wait, settle_s, settle_tolerance_m, settle_timeout_s)
        if measured is None:
            results.append(PoseResult(target, "not settled"))
            report(f"pose {index}: the arm did not come to rest within {settle_timeout_s} s; skipped")
            continue
        image = save_png(out_dir / f"sample_{index:03d}.png", grab_frame())
        results.append(PoseResult(target, "recorded", measured, image))
        collected.samples.append(MarkerSample(image, measured))
        collected.save(samples_path)
        report(f"pose {index}: recorded at {np.round(measured, 4).tolist()} "
               f"({1000 * np.linalg.norm(measured - target):.1f} mm from the target) -> {image.name}")
    return samples_path, results


def results_table(results: list[PoseResult]) -> str:
    lines = [f"{'#':>3s}  {'target x/y/z (m)':20s}    {'measured x/y/z (m)':23s}  {'error mm':>8s}  status"]
    for index, result in enumerate(results):
        target = " ".join(f"{v:6.3f}" for v in result.target)
        if result.measured is None:
            lines.append(f"{index:3d}  {target}    {'-':23s}  {'-':>8s}  {result.status}")
        else:
            measured = " ".join(f"{v:7.4f}" for v in result.measured)
            error = 1000 * np.linalg.norm(result.measured - result.target)
            lines.append(f"{index:3d}  {target}    {measured}  {error:8.1f}  {result.status}")
    return "\n".join(lines)
