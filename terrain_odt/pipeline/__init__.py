"""The nodes' logic without ROS: labeling cues and gating, the bridge to the
co-processor and what it trains (finetune), and the nodes' settings from the graph's
parameters (node_config)."""
