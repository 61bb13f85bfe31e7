"""Build definition of the terrain_odt ament_python package."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "terrain_odt"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        # Marker that makes the package visible to ament_index (ros2 pkg, launch).
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # glob() returns [] for empty directories, which setuptools accepts.
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        # Shipped pretrained models (blob + JSON sidecar) and the demo bag.
        (
            f"share/{PACKAGE}/models",
            glob("models/*.odtm") + glob("models/*.json") + glob("models/*.windows.npz"),
        ),
        (f"share/{PACKAGE}/data/demo", glob("data/demo/*.mcap")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "scipy", "pyserial", "cobs", "rosbags", "tflite", "pyyaml", "tqdm"],
    extras_require={
        # ROS 2 Kilted from PyPI wheels, for machines without a ROS install (a ROS install
        # provides the same packages through rosdep and package.xml instead).
        "ros": [
            "ros-kilted-rclpy",
            "ros-kilted-rmw-fastrtps-cpp",
            "ros-kilted-sensor-msgs",
            "ros-kilted-nav-msgs",
            "ros-kilted-geometry-msgs",
            "ros-kilted-std-msgs",
            "ros-kilted-std-srvs",
            "ros-kilted-diagnostic-msgs",
            "ros-kilted-rosgraph-msgs",
            "ros-kilted-ament-index-python",
        ],
        # ai-edge-litert: the TFLite interpreter, only to cross-check the importer in tests.
        "dev": [
            "pytest",
            "hypothesis",
            "ruff",
            "scikit-learn",
            "matplotlib",
            "ai-edge-litert",
            "pillow",  # decodes the CIFAR-10 JPEGs of tools/exp_standard.py
        ],
        # Coverage-guided fuzzing of the Python decoders (make fuzz, fuzz/README.md).
        "fuzz": ["atheris"],
        # The simulation engine of `terrain-odt sim` / `make sim` (terrain_odt/sim): MuJoCo from
        # PyPI (Apache-2.0, binary wheels, no GPU or display needed); Gazebo is only exported.
        "sim": ["mujoco>=3.1"],
    },
    zip_safe=True,
    maintainer="terrain_odt maintainers",
    maintainer_email="maintainers@terrain-odt.invalid",
    description=(
        "IMU terrain classification with integer-only on-device fine-tuning on an ESP32 "
        "co-processor"
    ),
    license="Apache-2.0",
    entry_points={
        # The nodes are installed to lib/terrain_odt (setup.cfg), where `ros2 run` and
        # `ros2 launch` look for them.
        "console_scripts": [
            "terrain-odt = terrain_odt.cli:main",
            "imu_features = terrain_odt.nodes.imu_features:main",
            "terrain_labeler = terrain_odt.nodes.terrain_labeler:main",
            "odt_bridge = terrain_odt.nodes.odt_bridge:main",
        ],
    },
)
