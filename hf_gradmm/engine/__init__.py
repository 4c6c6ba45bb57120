"""The GRADMM engine, pure torch (no files, no logging): the gradient maths (gradients.py), the
matching distance (objective.py), the token projection (projection.py), token-swap refinement
(refine.py) and one ADMM round as a function (round.py)."""
