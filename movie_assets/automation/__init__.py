"""What runs without a click: schedules, sensors and their policies."""
