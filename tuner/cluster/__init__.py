"""Where trials run: a ``ray up`` cluster config, its local twin, and connecting the driver."""
