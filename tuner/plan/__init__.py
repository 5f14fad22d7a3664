"""Planning a campaign before running it: real spot traces replayed under strategies (``python -m tuner.plan``)."""
