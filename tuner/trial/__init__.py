"""The trial side: what runs in a trial's process (the session behind ``tuner.session``, checkpoints, policy,
heartbeat)."""
