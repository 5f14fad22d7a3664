"""The built-in workloads: trainers that use ``tuner.session`` exactly as a user's would."""
