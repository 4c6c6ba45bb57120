"""``hf-gradmm evaluate`` and ``hf-gradmm audit``: does the data train models, and does it leak?"""

from __future__ import annotations

from hf_gradmm.evaluation import run_evaluation
from hf_gradmm.evaluation.audit import audit_table, run_audit
from hf_gradmm.evaluation.harness import markdown_table


def evaluate(task_args, args, recipe) -> None:
    """Fine-tune every model on every method's set; print the table."""
    results = run_evaluation(task_args.to_task(), args, recipe)
    print(markdown_table(results))
    print(f"wrote {args.output} and its .md table and .png figure")


def audit(args, recipe) -> None:
    """Membership inference against the run's target examples; print the table."""
    print(audit_table(run_audit(args, recipe)))
    print(f"wrote {args.output} and its .md table")
