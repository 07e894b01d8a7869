"""parl_robot: an ament_python ROS 2 package that is also pip-installable (`pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "parl_robot"
NODES = ["sim_bridge_node", "control_node", "camera_node", "reward_node", "learner_node", "episode_manager_node",
         "object_detector_node", "success_classifier_node", "actor_node"]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="PA-RL online fine-tuning of robot policies on a WidowX-250 over ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "operator_ui", "operator_ui.*"]),
    package_data={"operator_ui": ["templates/*.html", "static/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config/tasks", glob("config/tasks/*.yaml")),
        (f"share/{PACKAGE}/config/profiles", glob("config/profiles/*.yaml")),
    ],
    # torch is installed explicitly (torch==2.13.0, CPU) by scripts/setup_env.sh so that a loose
    # requirement never pulls a multi-GB CUDA build; any torch >= 2.2 works.
    install_requires=["numpy>=1.24", "modern_robotics>=1.1", "pyyaml>=6", "mujoco>=3.1", "opencv-python-headless>=4.8", "flask>=3", "h5py>=3.8", "torch>=2.2"],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.2", "selenium>=4.15", "pyarrow>=14"],
        "benchmarks": ["matplotlib>=3.7"],
        # learner stats as TensorBoard scalars (learner.tensorboard, on when installed)
        "tensorboard": ["tensorboard>=2.14"],
        # `parl-robot export ... format:=lerobot`: parquet, and video in LeRobot's own codec (AV1) via PyAV
        "lerobot": ["pyarrow>=14", "av>=14"],
        # OpenVLA policy: Llama from transformers 5 (the `cache=` API), LoRA, NF4 4-bit.
        "openvla": ["transformers>=5.24,<6", "peft>=0.21", "accelerate>=1.0", "bitsandbytes>=0.45", "tqdm"],
    },
    entry_points={
        "console_scripts": ["parl-robot = parl_robot.cli:main"]
        + [f"{node} = {PACKAGE}.nodes.{node}:main" for node in NODES]
        + ["operator_ui_node = operator_ui.operator_ui_node:main"],
    },
    zip_safe=False,
)
