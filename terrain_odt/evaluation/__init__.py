"""Evaluation: the deterministic one (evaluate), the DDS replay through the real nodes
(replay), and the window-by-window scoring both use."""
