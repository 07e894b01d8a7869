import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402

from parl_robot.config import TaskConfig  # noqa: E402

# A hung test must fail and say where it hung (pytest-timeout dumps every thread's stack), not eat the
# CI's time: slow tests run whole graphs under budgets of up to 15 minutes; a fast test that needs
# more than FAST_TEST_TIMEOUT_S is stuck. pytest.ini's `timeout` is the limit for the slow ones.
FAST_TEST_TIMEOUT_S = 600


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FAST_TEST_TIMEOUT_S))


@pytest.fixture(autouse=True)
def _single_thread_torch():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def cfg() -> TaskConfig:
    return TaskConfig()
