import numpy as np
import pytest

pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402

from parl_robot.nodes.common import rgb_image_from_message, rgb_image_message  # noqa: E402


def test_rgb_image_message_round_trip_and_rejects_other_encodings():
    frame = np.random.default_rng(0).integers(0, 255, (12, 20, 3), dtype=np.uint8)
    msg = rgb_image_message(frame, Time(sec=3))
    assert (msg.height, msg.width, msg.step, msg.encoding) == (12, 20, 60, "rgb8")
    received = rgb_image_from_message(msg)
    assert np.array_equal(received, frame)
    assert received.flags.writeable  # torch.as_tensor warns ("undefined behavior") on read-only arrays
    msg.encoding = "bgr8"
    assert rgb_image_from_message(msg) is None
    msg.encoding, msg.height = "rgb8", 13
    assert rgb_image_from_message(msg) is None


def test_json_messages_parse_to_objects_or_none():
    from std_msgs.msg import String

    from parl_robot.nodes.common import parse_event, parse_json_object

    assert parse_json_object(String(data='{"phase": "online"}')) == {"phase": "online"}
    assert parse_json_object(String(data="[1, 2]")) is None and parse_json_object(String(data="{nope")) is None
    assert parse_event(String(data='{"type": "start", "episode": 3}'))["episode"] == 3
    assert parse_event(String(data='{"episode": 3}')) is None
