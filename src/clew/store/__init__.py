"""Run directories: atomic writes, metrics, trajectories, checkpoint discovery (torch-free)."""
