"""What ``hf-gradmm evaluate`` writes: results.json, the Markdown tables and the figure.

The accuracy table (mean ± std over training sets x seeds), one table of paired differences per
reference method, the readability table and ten texts per method; and a bar chart of accuracy.
``write_json_and_table`` is shared by every report command (evaluate, study, audit).
"""

from __future__ import annotations

import json
from pathlib import Path


def markdown_table(results: dict) -> str:
    """Accuracy per method and model, then one table per reference of paired differences."""
    models = list(dict.fromkeys(run["model"] for run in results["runs"]))
    examples = {}
    for run in results["runs"]:
        examples.setdefault(run["method"], run.get("examples", 0))
    head = f"| method | examples | NLL under {results['generator']} | " + " | ".join(models) + " |"
    lines = [head, "|" + " --- |" * (3 + len(models))]
    for method, per_model in results["summary"].items():
        cells = [_cell(per_model[m]) if m in per_model else "-" for m in models]
        nll = results["training_nll_under_generator"].get(method)
        lines.append(
            f"| {method} | {examples[method] or '-'} | {f'{nll:.2f}' if nll is not None else '-'} | "
            + " | ".join(cells)
            + " |"
        )
    real = results["training_nll_under_generator"].get("real test texts")  # absent from hand-edited files
    lines += ["", f"Test accuracy on {results['test_examples']} test examples, mean ± std over training sets x "
              "fine-tuning seeds (the counts in brackets). A method with one training set (one synthesis) is a "
              f"screen: nothing in it shows how much syntheses differ. NLL of real test texts under the generator: "
              f"{'not measured' if real is None else f'{real:.2f}'}."]  # fmt: skip
    for ref, per_method in results.get("paired", {}).items():
        lines += ["", f"Paired difference to `{ref}` (accuracy points; 95% bootstrap interval over training sets, "
                  "seeds and test examples):", "", "| method | " + " | ".join(models) + " |",
                  "|" + " --- |" * (1 + len(models))]  # fmt: skip
        for method, per_model in per_method.items():
            cells = [_diff_cell(per_model[m]) if m in per_model else "-" for m in models]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines + _readability_lines(results)) + "\n"


def _readability_lines(results: dict) -> list[str]:
    """The readability table and ten texts per method."""
    read = results.get("readability") or {}
    if not read:
        return []
    judge = results.get("judge")
    head = f"| texts of | NLL under {results['generator']} |" + (f" NLL under {judge} |" if judge else "")
    lines = ["", "Readability of each method's training texts (all its sets): mean token NLL, the longest run of one "
             "repeated word (mean / max over the texts), distinct-2 (distinct word bigrams / all), the share "
             "`hf-gradmm build`'s label filter (its defaults) keeps:", "",
             head + " longest repeat | distinct-2 | label filter keeps |",
             "|" + " --- |" * (5 + bool(judge))]  # fmt: skip
    for method, r in read.items():
        judged = (f" {r['nll_judge']:.2f} |" if "nll_judge" in r else " - |") if judge else ""  # merged: not all judged
        keep = f" {r['label_filter_keep']:.2f} |" if "label_filter_keep" in r else " |"  # older results lack it
        lines.append(
            f"| {method} | {r['nll_generator']:.2f} |{judged} {r['longest_repeat_mean']:.1f} / "
            f"{r['longest_repeat_max']} | {r['distinct_2']:.2f} |{keep}"
        )
    names = results.get("label_names")
    for method, r in read.items():
        if "examples" not in r:  # real-data methods: their texts are the dataset's own
            continue
        lines += ["", f"Ten texts of `{method}` (a seeded draw):", ""]
        for label, text in r["examples"]:
            shown = text.replace("|", "\\|").replace("\n", " ")
            lines.append(f"- ({names[label] if names else label}) {shown}")
    return lines


def _cell(stats: dict) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f} ({stats['sets']} x {stats['seeds']})"


def _diff_cell(pair: dict) -> str:
    points = [100 * pair[k] for k in ("difference", "low", "high")]
    mark = " **above 0**" if points[1] > 0 else (" **below 0**" if points[2] < 0 else "")
    return f"{points[0]:+.1f} [{points[1]:+.1f}, {points[2]:+.1f}]{mark}"


def write_json_and_table(results: dict, output: Path, table: str) -> None:
    """``output`` (JSON) and its Markdown ``table`` beside it (.md): what every report command writes."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    output.with_suffix(".md").write_text(table)


def write_outputs(results: dict, output: Path) -> None:
    """results.json, the Markdown table (.md) and a bar chart (.png) of accuracy per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_json_and_table(results, output, markdown_table(results))
    summary = results["summary"]
    methods = list(summary)
    models = list(dict.fromkeys(run["model"] for run in results["runs"]))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(methods)), 4))
    for k, model in enumerate(models):
        xs = [i + k * width for i in range(len(methods))]
        means = [summary[m][model]["mean"] if model in summary[m] else 0 for m in methods]
        stds = [summary[m][model]["std"] if model in summary[m] else 0 for m in methods]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(methods))], methods, rotation=30)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{results['task']}: {results['budget_per_class']} examples per class, {results['seeds']} seeds")
    ax.axhline(1 / results["num_labels"], color="grey", lw=0.5, ls="--")  # chance
    ax.legend()
    fig.tight_layout()
    fig.savefig(output.with_suffix(".png"), dpi=120)
    plt.close(fig)
