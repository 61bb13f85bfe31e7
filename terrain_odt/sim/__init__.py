"""Simulation: one terrain world description, two engines (MuJoCo here, Gazebo exported).

* `world`: the description (terrains with friction, compliance and a heightfield bump spectrum;
  rectangular patches of them; the 4-wheel skid-steer rover, its IMU and wheel sensors; the
  route), loaded from YAML (`config/sim_world.yaml`), plus what follows from it without any
  engine: the heightfields, the labeler's map regions, the nodes' parameters.
* `route`: the route geometry and a pure-pursuit follower producing (v, ω) commands.
* `mujoco_sim`: the MuJoCo model built from the description and the simulator that steps it
  (IMU at the configured rate with gravity, wheel joint velocity and motor torque, wheel
  odometry, ground-truth pose and the patch class under the robot).
* `record`: the offline mode, a drive written to a rosbag2 MCAP (`rosbags`), the deterministic
  input of `make sim` and CI.
* `gazebo`: gz sim (Harmonic+) world and robot SDF, ros_gz_bridge YAML and the nodes' parameters
  generated from the same description (not run here: Gazebo is not installable on this machine).

No module here imports ROS; the live ROS node is `terrain_odt.nodes.sim_node`.
"""
