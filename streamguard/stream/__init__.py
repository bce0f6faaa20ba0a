"""Sources, micro-batching, the per-partition pipeline and replay."""
