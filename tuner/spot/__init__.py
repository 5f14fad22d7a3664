"""Spot interruption notices, the per-node agent that turns them into Ray node drains, and the drain watch in trials."""
