"""terrain_odt: IMU terrain classification with integer-only on-device fine-tuning."""
