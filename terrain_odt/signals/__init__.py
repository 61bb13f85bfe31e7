"""IMU and wheel signals to feature windows: the one extractor used offline and online
(features), its streaming form (streaming), and the layout of the features message."""
