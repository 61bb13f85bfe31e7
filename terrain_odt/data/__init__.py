"""Recorded data: BorealTC and the standard data sets, CSV folders of any robot, rosbag2
conversion, reading and playing, CDR, and labelled windows from bags (dataset)."""
