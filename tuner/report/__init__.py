"""The spot operations report across searches (``python -m tuner.report``)."""
