"""The workspace check's pure parts (parl_robot/robot/workspace.py): the yaws it checks, the arm's
joint axes it measures reach from, and the grid trim that moves one face at a time. The full check
against the API's IK runs in test_calibration_tools.py."""

import numpy as np
import pytest

from parl_robot.robot import workspace
from parl_robot.robot.workspace import WorkspaceError, WorkspaceReport, check_yaws


def test_the_checked_yaws_are_zero_and_both_bounds():
    assert check_yaws(0) == (0.0,) and check_yaws(0.0) == (0.0,)
    assert check_yaws(0.4) == (0.0, -0.4, 0.4)
    assert check_yaws(-0.4) == (0.0, -0.4, 0.4)  # the bound's sign does not matter
    assert check_yaws(1) == (0.0, -1, 1)


def test_the_joint_axes_are_those_of_the_wx250s_description():
    """Shoulder, elbow and wrist-angle axes (points on them from the screw axes): shoulder 0.11065 m up,
    elbow 0.04975 m ahead and 0.25 m above it, wrist 0.25 m ahead of the elbow; the reach is the two links."""
    np.testing.assert_allclose(workspace._axis_point(1), [0.0, 0.0, 0.11065], atol=1e-9)
    np.testing.assert_allclose(workspace._axis_point(2), [0.04975, 0.0, 0.36065], atol=1e-9)
    np.testing.assert_allclose(workspace._axis_point(4), [0.29975, 0.0, 0.36065], atol=1e-9)
    assert workspace._ARM_REACH_M == pytest.approx(np.hypot(0.04975, 0.25) + 0.25)


def report(reachable_points: np.ndarray, size: float = 0.4) -> WorkspaceReport:
    """A check of the box [0, size]^3 on a grid shaped like `reachable_points`, at one yaw."""
    axes = [np.linspace(0.0, size, n) for n in reachable_points.shape]
    return WorkspaceReport(np.zeros(3), np.full(3, size), (0.0,), axes, reachable_points[..., None])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_the_trim_moves_the_failing_face_in_by_one_layer_on_each_axis(axis):
    ok = np.ones((5, 5, 5), bool)
    ok[(slice(None),) * axis + (0,)] = False  # the low face on `axis` fails
    low, high = workspace._grid_trim(report(ok))
    expected_low = np.zeros(3)
    expected_low[axis] = 0.1
    np.testing.assert_allclose(low, expected_low)
    np.testing.assert_allclose(high, [0.4, 0.4, 0.4])


def test_after_a_low_face_moved_the_next_trim_looks_inside_the_new_box():
    """Low x face first (its whole layer fails), then one failing point at the low y face, inside the
    new box: the second trim must take y's low face only, and x stays where the first trim put it."""
    ok = np.ones((5, 5, 5), bool)
    ok[0, :, :] = False
    ok[2, 0, 2] = False
    low, high = workspace._grid_trim(report(ok))
    np.testing.assert_allclose(low, [0.1, 0.1, 0.0])
    np.testing.assert_allclose(high, [0.4, 0.4, 0.4])
    ok = np.ones((5, 5, 5), bool)
    ok[:, 0, :] = False
    ok[0, 2, 2] = False
    low, high = workspace._grid_trim(report(ok))
    np.testing.assert_allclose(low, [0.1, 0.1, 0.0])


def test_a_grid_with_no_reachable_box_is_refused():
    with pytest.raises(WorkspaceError, match="no box inside"):
        workspace._grid_trim(report(np.zeros((5, 5, 5), bool)))
