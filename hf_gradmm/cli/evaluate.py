"""``hf-gradmm evaluate``, ``study`` and ``audit``: does the data train models, what predicts it, does it leak?"""

from __future__ import annotations

from hf_gradmm.evaluation import run_evaluation
from hf_gradmm.evaluation.audit import audit_table, run_audit
from hf_gradmm.evaluation.report import markdown_table
from hf_gradmm.evaluation.study import run_study, study_table


def evaluate(task_args, args, recipe) -> None:
    """Fine-tune every model on every method's set; print the table."""
    results = run_evaluation(task_args.to_task(), args, recipe)
    print(markdown_table(results))
    print(f"wrote {args.output} and its .md table and .png figure")


def audit(args, recipe) -> None:
    """Membership inference against the run's target examples; print the table."""
    print(audit_table(run_audit(args, recipe)))
    print(f"wrote {args.output} and its .md table")


def study(args) -> None:
    """Distances of every evaluated training set to the targets and their correlation with accuracy."""
    print(study_table(run_study(args)))
    print(f"wrote {args.output} and its .md table")
