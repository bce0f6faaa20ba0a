"""Where results go: alerts (JSON Lines, Kafka) and dead letters."""
