"""What a synthesis matches: the real pool, the class targets (at one or several checkpoints,
optionally differentially private) and everything a run computes once before its rounds."""
