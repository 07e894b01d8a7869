"""A run's learning curve from its stored records (parl_robot/data/learning_curve.py): which episodes
count and in which order, the moving average, the before/after summary and table, and the PNG."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from parl_robot.data.learning_curve import curve_summary, draw_learning_curve, success_curve, summary_table


def record(index: int, success: bool, phase: str | None = "online", **extra) -> dict:
    return {"episode_id": f"online_{index:05d}", "kind": "online", "success": success, "phase": phase, **extra}


def test_the_curve_counts_non_demo_unaborted_episodes_in_id_order_with_a_trailing_average():
    outcomes = [True] * 3 + [False] * 9
    records = [record(i, s) for i, s in enumerate(outcomes)]
    records.reverse()  # the store's order does not matter: ids do
    records += [{"episode_id": "demo_00000", "kind": "demo", "success": False},
                record(50, True, aborted=True), record(51, False, phase=None)]
    curve = success_curve(records)
    assert curve["window"] == 10
    points = curve["points"]
    assert [p["n"] for p in points] == list(range(1, 14))
    assert [p["episode_id"] for p in points] == [f"online_{i:05d}" for i in list(range(12)) + [51]]
    assert [p["success"] for p in points] == outcomes + [False]
    assert points[-1]["phase"] == "online"  # no phase stored: online
    averages = [p["moving_average"] for p in points]
    assert averages[:3] == [1.0, 1.0, 1.0] and averages[3] == 0.75
    assert averages[9] == pytest.approx(0.3) and averages[10] == pytest.approx(0.2) and averages[12] == 0.0  # last 10 only
    assert curve["phases"] == {"online": {"episodes": 13, "successes": 3, "success_rate": 3 / 13}}
    narrow = success_curve(records, window=2)["points"]
    assert [p["moving_average"] for p in narrow[:5]] == [1.0, 1.0, 1.0, 0.5, 0.0]


def test_summary_compares_the_warmup_with_the_first_and_last_online_blocks():
    records = [record(i, s, "warmup") for i, s in enumerate([True, False, False, False])]
    records += [record(10 + i, s) for i, s in enumerate([False] * 10 + [True] * 2 + [False] * 3 + [True] * 7)]
    summary = curve_summary(records)
    assert summary == {"warmup_episodes": 4, "online_episodes": 22, "block": 10, "offline_start": 0.25,
                       "first_online_block": 0.0, "last_online_block": 0.7, "gain_points": 45.0}
    assert summary_table(summary).splitlines() == [
        f"   {'':34s} {'episodes':>8s} {'success':>8s}",
        f"   {'before: warm-up (offline policy)':34s} {4:>8d} {'25 %':>8s}",
        f"   {'first 10 online':34s} {10:>8d} {'0 %':>8s}",
        f"   {'after: last 10 online':34s} {10:>8d} {'70 %':>8s}",
        "   gain (last 10 online − warm-up): +45 points",
    ]
    short = curve_summary(records[:6], block=5)  # 2 online episodes: blocks are what there is
    assert short["first_online_block"] == short["last_online_block"] == 0.0
    assert "first 5 online" in summary_table(short) and f"{2:>8d}" in summary_table(short).splitlines()[2]


def test_without_warmup_or_online_episodes_the_missing_figures_are_dashes():
    no_warmup = curve_summary([record(0, True)])
    assert no_warmup["offline_start"] is None and no_warmup["gain_points"] is None
    assert no_warmup["last_online_block"] == 1.0
    no_online = curve_summary([record(0, True, "warmup")])
    assert no_online["first_online_block"] is None and no_online["last_online_block"] is None
    table = summary_table(no_online)
    assert table.splitlines()[3].endswith("–") and table.endswith("gain (last 10 online − warm-up): –")


def test_the_png_marks_each_episode_by_phase_and_outcome(tmp_path):
    records = [record(0, False, "warmup"), record(1, True, "warmup"), record(2, False), record(3, True)]
    path = draw_learning_curve(records, tmp_path / "runs" / "cup" / "curve.png")
    assert path == tmp_path / "runs" / "cup" / "curve.png"  # its folders created
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (360, 720, 3)  # RGB, no alpha channel
    image = cv2.imread(str(path))
    assert image.shape == (360, 720, 3)
    left, top, plot_w, plot_h = 60, 40, 640, 270

    def x(index: int) -> int:
        return int(left + plot_w * (index + 0.5) / len(records))

    # Episode 2 (warm-up success, average 0.5) at the top in orange; episode 3 (online failure, average
    # 1/3) at the bottom in blue (BGR).
    assert tuple(image[top, x(1)]) == (0, 108, 239)
    assert tuple(image[top + plot_h, x(2)]) == (192, 101, 21)
    boundary = int(left + plot_w * 2 / len(records))  # warm-up | online

    def grey_line(pixel) -> bool:  # the boundary (120, antialiased), darker than the grid (200)
        return pixel[0] == pixel[1] == pixel[2] and 100 <= pixel[0] < 190

    assert grey_line(image[top + plot_h // 3, boundary])
    online_only = cv2.imread(str(draw_learning_curve(records[2:], tmp_path / "online.png")))
    assert not any(grey_line(online_only[row, boundary]) for row in range(top + 5, top + plot_h - 5))  # no boundary


def test_a_png_that_cannot_be_written_raises(tmp_path):
    (tmp_path / "curve.png").mkdir()  # a folder where the file should go
    with pytest.raises(OSError, match="could not write"):
        draw_learning_curve([record(0, True)], tmp_path / "curve.png")


def test_the_gain_is_rounded_to_a_tenth_of_a_point():
    records = [record(i, s, "warmup") for i, s in enumerate([True, False, False])]  # 1/3
    records += [record(10 + i, True) for i in range(2)]
    assert curve_summary(records)["gain_points"] == 66.7


GOLDEN_CURVE = Path(__file__).parent / "fixtures" / "learning_curve.png"


def golden_records() -> list[dict]:
    warmup = [True, False, False, True, False]
    online = [False, True, False, False, True, True, False, True, True, True, True, False, True, True]
    return ([record(i, s, "warmup") for i, s in enumerate(warmup)]
            + [record(10 + i, s) for i, s in enumerate(online)])


def test_the_png_is_pixel_for_pixel_the_reviewed_drawing(tmp_path):
    """The whole drawing (axes, labels, grid, boundary, dots, average, title, colours) against a PNG a
    person looked at (tests/fixtures/learning_curve.png). If a change to the drawing is meant, look at
    the new image this test names and copy it over the fixture."""
    path = draw_learning_curve(golden_records(), tmp_path / "curve.png", window=4)
    drawn, golden = cv2.imread(str(path)), cv2.imread(str(GOLDEN_CURVE))
    assert drawn.shape == golden.shape, (drawn.shape, golden.shape)
    differing = int((drawn != golden).any(axis=2).sum())
    assert differing == 0, f"{differing} pixels differ from {GOLDEN_CURVE}; the new drawing: {path} (OpenCV {cv2.__version__})"
    titled = cv2.imread(str(draw_learning_curve(golden_records(), tmp_path / "titled.png", window=4, title="cup_to_rack")))
    changed_rows = np.nonzero((titled != golden).any(axis=(1, 2)))[0]
    assert len(changed_rows) and changed_rows.max() < 40  # a title replaces the default one, above the plot


def test_the_boundary_is_drawn_whenever_both_phases_are_there(tmp_path):
    """One warm-up episode is enough for the warm-up | online line; without online episodes (or without
    warm-up ones) there is none, at either edge."""
    left, top, plot_w, plot_h = 60, 40, 640, 270

    def boundary_rows(image, column) -> int:  # rows of the (grey 120, antialiased) boundary in a column
        pixels = image[top + 5: top + plot_h - 5, column]
        return int(sum(p[0] == p[1] == p[2] and 100 <= p[0] < 190 for p in pixels))

    one_warmup = [record(0, True, "warmup"), record(1, False), record(2, True), record(3, False)]
    image = cv2.imread(str(draw_learning_curve(one_warmup, tmp_path / "one.png")))
    assert boundary_rows(image, int(left + plot_w * 1 / 4)) > plot_h // 2
    for name, records, column in (("online", [record(i, i % 2 == 0) for i in range(4)], left),
                                  ("warmup", [record(i, i % 2 == 0, "warmup") for i in range(4)], left + plot_w)):
        image = cv2.imread(str(draw_learning_curve(records, tmp_path / f"{name}.png")))
        assert boundary_rows(image, column) < plot_h // 4, name  # grid crossings only, no line


def test_the_default_moving_average_is_over_10_episodes(tmp_path):
    records = golden_records()
    default = cv2.imread(str(draw_learning_curve(records, tmp_path / "default.png")))
    ten = cv2.imread(str(draw_learning_curve(records, tmp_path / "ten.png", window=10)))
    eleven = cv2.imread(str(draw_learning_curve(records, tmp_path / "eleven.png", window=11)))
    assert np.array_equal(default, ten) and not np.array_equal(default, eleven)
