import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402

from parl_robot.config import TaskConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _single_thread_torch():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def cfg() -> TaskConfig:
    return TaskConfig()
