"""Thin rclpy nodes of terrain_odt; the logic lives in the plain modules of the package.

Each node class takes the usual `rclpy.node.Node` keyword arguments, so the one-process
launcher can create them next to each other; each module's `main` runs the node alone (the
console scripts `ros2 launch` starts).
"""
