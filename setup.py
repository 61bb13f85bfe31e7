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
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "scipy", "pyserial", "cobs", "rosbags", "tflite"],
    extras_require={
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
        # ROS 2 nodes (imu_features, terrain_labeler, odt_bridge, ...) are added here as
        # "name = terrain_odt.module:main" once they exist.
        "console_scripts": ["terrain-odt = terrain_odt.cli:main"],
    },
)
