"""Is the safety box reachable with a downward grasp? A grid check with the Interbotix API's IK, and
the largest box (faces moved inward) on which every checked pose is reachable.

A grid point counts as reachable when `robot.widowx.solve_ik` accepts the downward gripper there at
every checked yaw — the same test `set_ee_pose_matrix` applies on the arm when it is commanded from
the API's default seeds (as `go_home` is). The box's corners are grid points. `ControlConfig` has no
yaw bound yet, so the check uses yaw 0 and ±`DEFAULT_YAW_BOUND_RAD` (the grasp turns about the
world z axis, as a yaw action does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parl_robot.robot.safety import DOWNWARD_ROTATION, rotation_about_axis
from parl_robot.robot.widowx import HOME_MATRIX, SCREW_AXES, pose_matrix, solve_ik

DEFAULT_GRID = (5, 5, 4)  # points along x, y, z (faces and corners included)
DEFAULT_YAW_BOUND_RAD = 0.5
MIN_BOX_SIZE_M = 0.05  # the thinnest box `task_workspace_overlay` accepts
BISECTION_RESOLUTION_M = 0.01
MAX_TRIM_ROUNDS = 6


class WorkspaceError(ValueError):
    """No box inside the given one is reachable on the checked grid."""


def grasp_rotation(yaw: float) -> np.ndarray:
    """The downward gripper turned by `yaw` about the world z axis."""
    return rotation_about_axis(np.array([0.0, 0.0, yaw])) @ DOWNWARD_ROTATION


def check_yaws(yaw_bound: float) -> tuple[float, ...]:
    return (0.0,) if yaw_bound == 0 else (0.0, -abs(yaw_bound), abs(yaw_bound))


def _axis_point(column: int) -> np.ndarray:
    """A point on revolute screw axis `column` (unit ω, v = -ω x q): q = ω x v."""
    omega, velocity = SCREW_AXES[:3, column], SCREW_AXES[3:, column]
    return np.cross(omega, velocity)


# The shoulder, elbow and wrist-angle axes are parallel and the forearm roll turns about the
# elbow-wrist line, so the wrist-angle axis is at most upper arm + forearm from the shoulder axis.
_SHOULDER, _ELBOW, _WRIST = _axis_point(1), _axis_point(2), _axis_point(4)
_ARM_REACH_M = np.linalg.norm((_ELBOW - _SHOULDER)[[0, 2]]) + np.linalg.norm((_WRIST - _ELBOW)[[0, 2]])
_WRIST_TO_GRIPPER_M = HOME_MATRIX[0, 3] - _WRIST[0]
_REACH_MARGIN_M = 0.005  # well above the IK's 1 mm / 1 mrad acceptance


def beyond_reach(point: np.ndarray) -> bool:
    """True when the downward gripper at `point` puts the wrist out of the arm's reach, so no IK
    solution exists and the solver's iterations can be skipped."""
    wrist = np.asarray(point, float) + np.array([0.0, 0.0, _WRIST_TO_GRIPPER_M])
    in_plane = np.array([np.hypot(wrist[0], wrist[1]), wrist[2] - _SHOULDER[2]])
    return bool(np.linalg.norm(in_plane) > _ARM_REACH_M + _REACH_MARGIN_M)


def grid_axes(box_low, box_high, grid: tuple[int, int, int]) -> list[np.ndarray]:
    return [np.linspace(low, high, count) for low, high, count in zip(box_low, box_high, grid)]


def reachable_at(points: np.ndarray, yaws: tuple[float, ...]) -> np.ndarray:
    """(N, len(yaws)) bool: the API's IK accepts the downward grasp at each point and yaw."""
    rotations = [grasp_rotation(yaw) for yaw in yaws]
    return np.array([[not beyond_reach(point) and solve_ik(pose_matrix(point, rotation))[1] for rotation in rotations]
                     for point in points], bool)


@dataclass
class WorkspaceReport:
    box_low: np.ndarray  # (3,)
    box_high: np.ndarray  # (3,)
    yaws: tuple[float, ...]
    axes: list[np.ndarray]  # grid coordinates along x, y, z
    reachable: np.ndarray  # (nx, ny, nz, len(yaws)) bool

    @property
    def reachable_points(self) -> np.ndarray:
        """(nx, ny, nz) bool: reachable at every checked yaw."""
        return self.reachable.all(axis=-1)

    @property
    def all_reachable(self) -> bool:
        return bool(self.reachable.all())

    def unreachable(self) -> list[tuple[np.ndarray, tuple[float, ...]]]:
        """(point, yaws it fails at) for every grid point that fails at some yaw."""
        failures = []
        for index in zip(*np.nonzero(~self.reachable_points)):
            point = np.array([axis[i] for axis, i in zip(self.axes, index)])
            failures.append((point, tuple(y for y, ok in zip(self.yaws, self.reachable[index]) if not ok)))
        return failures

    def table(self) -> str:
        """The unreachable grid points, one line each."""
        failures = self.unreachable()
        total = self.reachable_points.size
        lines = [f"{total - len(failures)}/{total} grid points reachable at yaw {', '.join(f'{y:+.2f}' for y in self.yaws)} rad"]
        if failures:
            lines.append("      x       y       z   fails at yaw (rad)")
            lines += [f"  {p[0]:6.3f}  {p[1]:6.3f}  {p[2]:6.3f}   {', '.join(f'{y:+.2f}' for y in yaws)}" for p, yaws in failures]
        return "\n".join(lines)


def check_workspace(box_low, box_high, grid=DEFAULT_GRID, yaws=check_yaws(DEFAULT_YAW_BOUND_RAD)) -> WorkspaceReport:
    box_low, box_high = np.asarray(box_low, float), np.asarray(box_high, float)
    axes = grid_axes(box_low, box_high, grid)
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)  # (nx * ny * nz, 3)
    reachable = reachable_at(points, tuple(yaws)).reshape(*grid, len(yaws))
    return WorkspaceReport(box_low, box_high, tuple(yaws), axes, reachable)


def _grid_trim(report: WorkspaceReport) -> tuple[np.ndarray, np.ndarray]:
    """Move faces inward one grid layer at a time, always the layer with the largest unreachable
    fraction, until every grid point left is reachable."""
    ok = report.reachable_points
    lows, highs = [0, 0, 0], [n - 1 for n in ok.shape]
    while True:
        inside = ok[lows[0] : highs[0] + 1, lows[1] : highs[1] + 1, lows[2] : highs[2] + 1]
        if inside.all():
            break
        best, best_score = None, None
        for axis in range(3):
            coordinates = report.axes[axis]
            for side, layer in ((0, np.take(inside, 0, axis)), (1, np.take(inside, -1, axis))):
                remaining = coordinates[highs[axis] - side] - coordinates[lows[axis] + 1 - side]
                if remaining < MIN_BOX_SIZE_M - 1e-9:
                    continue
                failing = int((~layer).sum())
                score = (failing / layer.size, failing)
                if failing and (best_score is None or score > best_score):
                    best, best_score = (axis, side), score
        if best is None:
            raise WorkspaceError(
                f"no box inside {np.round(report.box_low, 3).tolist()}..{np.round(report.box_high, 3).tolist()} is reachable "
                f"on the checked grid (a box must stay at least {MIN_BOX_SIZE_M} m on every axis; a finer grid may find one)"
            )
        axis, side = best
        if side == 0:
            lows[axis] += 1
        else:
            highs[axis] -= 1
    low = np.array([report.axes[a][lows[a]] for a in range(3)])
    high = np.array([report.axes[a][highs[a]] for a in range(3)])
    return low, high


def _face_reachable(low, high, axis: int, value: float, grid, yaws) -> bool:
    """Every grid point on the face plane `axis` = value of the box low..high is reachable."""
    axes = grid_axes(low, high, grid)
    axes[axis] = np.array([value])
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    rotations = [grasp_rotation(yaw) for yaw in yaws]
    return all(not beyond_reach(point) and solve_ik(pose_matrix(point, rotation))[1] for point in points for rotation in rotations)


def _expand_faces(low, high, outer_low, outer_high, grid, yaws) -> tuple[np.ndarray, np.ndarray]:
    """Push each face that was trimmed back out towards the outer box, by bisection on face planes."""
    low, high = low.copy(), high.copy()
    for axis in range(3):
        for bound, outer, sign in ((low, outer_low, -1), (high, outer_high, 1)):
            good, bad = bound[axis], outer[axis]
            if abs(bad - good) < 1e-9:
                continue
            while abs(bad - good) > BISECTION_RESOLUTION_M:
                middle = (good + bad) / 2
                good, bad = (middle, bad) if _face_reachable(low, high, axis, middle, grid, yaws) else (good, middle)
            bound[axis] = good
    return low, high


def propose_reachable_box(
    box_low, box_high, grid=DEFAULT_GRID, yaws=check_yaws(DEFAULT_YAW_BOUND_RAD)
) -> tuple[np.ndarray, np.ndarray, list[WorkspaceReport]]:
    """(low, high, reports): the box trimmed until its full grid check passes; reports[0] is the
    check of the given box, reports[-1] the passing check of the proposal."""
    low, high = np.asarray(box_low, float), np.asarray(box_high, float)
    reports = [check_workspace(low, high, grid, yaws)]
    for _ in range(MAX_TRIM_ROUNDS):
        if reports[-1].all_reachable:
            return low, high, reports
        inner_low, inner_high = _grid_trim(reports[-1])
        low, high = _expand_faces(inner_low, inner_high, low, high, grid, yaws)
        reports.append(check_workspace(low, high, grid, yaws))
    if reports[-1].all_reachable:
        return low, high, reports
    raise WorkspaceError(f"no reachable box found in {MAX_TRIM_ROUNDS} rounds; last tried "
                         f"{np.round(low, 3).tolist()}..{np.round(high, 3).tolist()}\n{reports[-1].table()}")
