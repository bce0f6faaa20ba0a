"""Detectors own per-account state and call backend functions; they never touch Kafka or Prometheus."""
