"""Build definition of the terrain_odt ament_python package.

The install layout (share/terrain_odt, the ament index marker, the node launchers in
lib/terrain_odt, the .pth that adds the prefix to AMENT_PREFIX_PATH) is defined once in
terrain_odt/ament_layout.py, which also makes it for editable installs (`make setup`).
"""

import os
import runpy

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PACKAGE = "terrain_odt"
HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUT = runpy.run_path(os.path.join(HERE, PACKAGE, "ament_layout.py"))


class BuildPyWithPth(build_py):
    """build_py that also puts the AMENT_PREFIX_PATH `.pth` at the root of site-packages
    (`pip install .`: `ros2 launch terrain_odt ...` then finds the package without any
    environment set up; see terrain_odt/ament_layout.py)."""

    def run(self) -> None:
        super().run()
        self.copy_file(
            os.path.join("resource", LAYOUT["PTH_NAME"]),
            os.path.join(self.build_lib, LAYOUT["PTH_NAME"]),
            preserve_mode=False,
        )

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        pth = os.path.join(self.build_lib, LAYOUT["PTH_NAME"])
        return [*super().get_outputs(include_bytecode), pth]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # share/terrain_odt (launch, config, sim, models, demo bag), the ament index marker and the
    # node launchers in lib/terrain_odt: terrain_odt/ament_layout.py.
    data_files=LAYOUT["data_files"](HERE),
    cmdclass={"build_py": BuildPyWithPth},
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
        # colcon installs these to lib/terrain_odt (setup.cfg), where `ros2 run` and
        # `ros2 launch` look for them; pip to bin/, and lib/terrain_odt gets launchers
        # (resource/libexec, one per node of terrain_odt.ros.graph) that exec them.
        "console_scripts": [
            "terrain-odt = terrain_odt.cli:main",
            "imu_features = terrain_odt.nodes.imu_features:main",
            "terrain_labeler = terrain_odt.nodes.terrain_labeler:main",
            "odt_bridge = terrain_odt.nodes.odt_bridge:main",
            "bag_player = terrain_odt.nodes.bag_player:main",
        ],
    },
)
