"""The GRADMM engine, pure torch (no files, no logging): the gradient maths (gradients.py), the
matching distance (objective.py), each text's kept state (rows.py) and the passes that run only
what changed (suffix.py), the token projection (projection.py), token-swap refinement
(refine.py), the choice of B texts from a pool the LM wrote (select.py), one ADMM round as a
function (round.py) and its stage timer (stages.py)."""
