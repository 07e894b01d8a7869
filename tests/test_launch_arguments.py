"""Launch arguments are checked before any node starts: one line naming the bad argument."""

import json
import subprocess
import sys

import pytest

from parl_robot.cli import main
from parl_robot.launch_arguments import LaunchArgumentError, parse_overrides, validate_launch_arguments


@pytest.fixture
def store_with_demo(tmp_path):
    (tmp_path / "store" / "episodes" / "demo_00000").mkdir(parents=True)
    return tmp_path / "store"


def test_typos_and_bad_values_name_the_argument(store_with_demo, tmp_path):
    ok = {"store_dir": str(store_with_demo)}
    with pytest.raises(LaunchArgumentError, match=r"policy:=gausian .*did you mean 'gaussian'"):
        validate_launch_arguments({**ok, "policy": "gausian"})
    with pytest.raises(LaunchArgumentError, match=r"task:=cup_to_rak .*did you mean 'cup_to_rack'"):
        validate_launch_arguments({**ok, "task": "cup_to_rak"})
    with pytest.raises(LaunchArgumentError, match=r"unknown launch argument\(s\) \['ui_prt'\]; did you mean 'ui_port'"):
        validate_launch_arguments({**ok, "ui_prt": "8080"})
    with pytest.raises(LaunchArgumentError, match=r"ui_port:=abc must be an integer"):
        validate_launch_arguments({**ok, "ui_port": "abc"})
    with pytest.raises(LaunchArgumentError, match=r"overrides:= overrides are not valid JSON"):
        validate_launch_arguments({**ok, "overrides": '{"episodes.num_online_episodes": }'})
    with pytest.raises(LaunchArgumentError, match=r"configuration is invalid: .*learner.optimizer.num_samples"):
        validate_launch_arguments({**ok, "overrides": '{"learner.optimizer.num_samples": -3}'})
    with pytest.raises(LaunchArgumentError, match=r"sim:=maybe must be true or false"):
        validate_launch_arguments({**ok, "sim": "maybe"})
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(LaunchArgumentError, match=r"store_dir:=.*is a file"):
        validate_launch_arguments({"store_dir": str(a_file)})
    with pytest.raises(LaunchArgumentError, match=r"no demonstrations in .*parl-robot record-demos task:=cup_to_rack store_dir:="):
        validate_launch_arguments({"store_dir": str(tmp_path / "empty")})
    args = validate_launch_arguments({**ok, "overrides": "episodes.num_online_episodes=3,learner.selection=softmax"})
    assert json.loads(args["overrides"]) == {"episodes.num_online_episodes": 3, "learner.selection": "softmax"}


def test_a_store_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")  # (a read-only directory would do the same for a non-root user)
    with pytest.raises(LaunchArgumentError, match=r"store_dir:=.*not writable"):
        validate_launch_arguments({"store_dir": str(blocker / "store")})


def test_override_forms():
    assert parse_overrides("") == {}
    assert parse_overrides('{"a.b": 1}') == {"a.b": 1}
    assert parse_overrides("a.b=true, c.d=x") == {"a.b": True, "c.d": "x"}
    with pytest.raises(LaunchArgumentError, match="overrides:= override 'oops' is not key=value"):
        parse_overrides("oops")


def test_cli_reports_one_line_and_help_exits_zero(capsys, store_with_demo):
    assert main(["launch", "finetune", "policy:=gausian", f"store_dir:={store_with_demo}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'gaussian'" in err
    for argv in (["launch", "finetune", "--help"], ["demo", "--help"], ["record-demos", "--help"],
                 ["export", "--help"], ["calibrate", "--help"]):
        assert main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "ui_port" in out and "lockstep" in out and "usage: parl-robot record-demos" in out
    assert main(["demo", "episodes:=2", "polcy:=gaussian"]) == 2
    assert "did you mean 'policy'" in capsys.readouterr().err


def test_top_level_help_lists_the_launch_arguments():
    result = subprocess.run([sys.executable, "-m", "parl_robot.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "camera_device" in result.stdout and "overrides" in result.stdout


def test_demo_seed_reaches_the_demonstrations_the_sim_and_the_learner(monkeypatch, tmp_path, capsys):
    import parl_robot.cli as cli
    import parl_robot.launcher
    import parl_robot.sim.record_demos

    seen = {}
    def record_demos(cfg, store, count, seed=0):
        seen.update(demo_seed=seed, cfg=cfg)
        (store.root / "episodes" / "demo_00000").mkdir(parents=True)
        return count

    monkeypatch.setattr(parl_robot.sim.record_demos, "record_demos", record_demos)
    monkeypatch.setattr(cli, "finetune_graph", lambda args: seen.update(graph=args) or [])
    monkeypatch.setattr(parl_robot.launcher, "launch", lambda graph: 0)
    assert main(["demo", "seed:=3", "episodes:=4", f"store_dir:={tmp_path / 'store'}"]) == 0
    overrides = json.loads(seen["graph"]["overrides"])
    assert overrides == {"sim.seed": 3, "learner.seed": 3, "episodes.num_online_episodes": 4}
    assert seen["demo_seed"] == 3 and seen["cfg"].sim.seed == 3 and seen["cfg"].learner.seed == 3
    assert main(["demo", "seed:=-1", f"store_dir:={tmp_path / 'other'}"]) == 2
    assert "seed:=-1 must be an integer" in capsys.readouterr().err
