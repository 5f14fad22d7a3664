"""``python -m tuner.check``: does a search's training code resume exactly? Find out before paying for spot.

One configuration of the search runs on the local twin three times: undisturbed, through a spot notice,
and through a hard node kill, each fault placed by the trial's progress. Every metric the trainer
reports is compared at every step; the verdict is identical, or the first divergence with its likely
cause, plus what each fault cost and whether a checkpoint fits each cloud's notice.
"""
