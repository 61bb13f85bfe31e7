"""The ROS graph, defined once (graph), the one-process launcher, and the launch file helpers."""
