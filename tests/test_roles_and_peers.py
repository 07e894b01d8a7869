"""The graph split by role (robot PC / GPU server) and the start-up peer check that names what is missing."""

import pytest

from operator_ui.state import OperatorState
from parl_robot.graph import finetune_graph
from parl_robot.launch_arguments import LaunchArgumentError, validate_launch_arguments
from parl_robot.peers import PeerCheck, discovery_settings, missing_topics


def _names(**arguments):
    return [spec.name for spec in finetune_graph(arguments)]


def test_roles_split_the_graph_and_keep_supervision():
    assert _names(sim="true", ui_port="8080", role="robot") == ["sim_bridge", "reward_detector", "operator_ui"]
    assert _names(sim="false", role="robot") == ["camera", "control", "object_detector", "reward_detector"]
    assert _names(sim="true", role="learner") == ["learner", "episode_manager"]
    whole = _names(sim="true", ui_port="8080")
    assert sorted(whole) == sorted(_names(sim="true", ui_port="8080", role="robot") + _names(sim="true", role="learner"))
    robot = {spec.name: spec for spec in finetune_graph({"sim": "false", "role": "robot"})}
    assert robot["control"].critical and robot["camera"].respawn and not any(s.ends_launch for s in robot.values())
    learner = {spec.name: spec for spec in finetune_graph({"role": "learner", "peer_check_s": "7"})}
    assert learner["episode_manager"].ends_launch and learner["learner"].respawn
    # One node per side checks for the other; the whole graph on one host checks nothing.
    assert learner["episode_manager"].parameters["role"] == "learner"
    assert learner["episode_manager"].parameters["peer_check_s"] == 7.0
    assert robot["control"].parameters["role"] == "robot" and "role" not in robot["camera"].parameters
    assert not any("role" in spec.parameters for spec in finetune_graph({}))
    # Lockstep: the sim bridge still drives /clock and every node of either side runs on sim time.
    sim_robot = finetune_graph({"role": "robot", "lockstep": "true"})
    assert sim_robot[0].parameters["lockstep"] is True
    assert all(spec.parameters["use_sim_time"] for spec in finetune_graph({"role": "learner", "lockstep": "true"}))


def test_role_arguments_are_validated(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(LaunchArgumentError, match=r"role:=lerner is not a role; did you mean 'learner'"):
        validate_launch_arguments({"store_dir": str(store), "role": "lerner"})
    with pytest.raises(LaunchArgumentError, match=r"peer_check_s:=soon must be a number"):
        validate_launch_arguments({"store_dir": str(store), "role": "robot", "peer_check_s": "soon"})
    # The robot PC needs no demonstrations (the learner reads them); the learner side does.
    assert validate_launch_arguments({"store_dir": str(store), "role": "robot"})["role"] == "robot"
    with pytest.raises(LaunchArgumentError, match="no demonstrations"):
        validate_launch_arguments({"store_dir": str(store), "role": "learner"})


def test_peer_check_names_missing_topics_and_settings_and_keeps_checking():
    publishers = {"robot/state": 1}
    count = lambda topic: publishers.get(topic, 0)
    assert missing_topics((("robot/state",), ("camera/image_raw", "objects/poses")), count) == ["camera/image_raw or objects/poses"]
    check = PeerCheck("learner", grace_s=15.0, started_s=100.0)
    assert check.update(110.0, count) is None  # still starting
    level, text = check.update(115.5, count)
    assert level == "error" and "no robot side after 16 s" in text
    assert "robot/safety, camera/image_raw or objects/poses" in text and "robot/state" not in text.split("publishes")[1].split(".")[0]
    assert "ROS_DOMAIN_ID" in text and "ROS_DISCOVERY_SERVER" in text and "role:=robot" in text
    assert check.update(116.5, count) is None  # reported once, checked on
    publishers.update({"robot/safety": 1, "objects/poses": 1})
    level, text = check.update(120.0, count)
    assert level == "info" and "robot side seen" in text and check.missing == []
    publishers.clear()  # gone again (link down long enough for discovery to drop the participants)
    assert check.update(200.0, count)[0] == "error"
    with pytest.raises(ValueError):
        PeerCheck("all", 15.0, 0.0)


def test_discovery_settings_show_values_and_defaults():
    text = discovery_settings({"ROS_DOMAIN_ID": "42", "ROS_DISCOVERY_SERVER": "10.0.0.2:11811"})
    assert "ROS_DOMAIN_ID=42" in text and "ROS_DISCOVERY_SERVER=10.0.0.2:11811" in text
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE (unset = SUBNET)" in text


def test_the_page_warns_when_the_learner_side_is_missing():
    state = OperatorState("cup_to_rack", "put the cup on the rack", 40)
    state.on_status({"peers_missing": ["learner/stats", "episode/state"]})
    warning = next(w for w in state.warnings() if w["code"] == "peer_missing")
    assert "learner/stats, episode/state" in warning["text"] and "ROS_DOMAIN_ID" in warning["text"]
