"""Nothing lost, every refusal says the fix (issue 18): the output folder's lock, Ctrl-C, unreadable
round files, unusable output folders, DP builds and pushes, empty classes, and a synthesis killed
(SIGKILL) at random moments and resumed each time.

The runs are real ``hf-gradmm`` processes on a tiny random model saved with SmolLM2's tokenizer
(seconds per run); the data is the offline Rotten Tomatoes task."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import _row, write_synthesis_dir

from hf_gradmm import rundir
from hf_gradmm.cli.main import main

SYNTH = [
    "--init", "lm",  # the ADMM round: its steps are what these tests interrupt
    "--task", "rotten_tomatoes", "--texts-per-round", "1", "--seq-len", "4", "--outer-steps", "30",
    "--inner-steps", "1", "--init-candidates", "1", "--target-examples", "4", "--heldout-examples", "2",
    "--topk", "10", "--refine-steps", "2", "--projection-beams", "1", "--disable-tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_llama, smollm2_tokenizer):
    folder = tmp_path_factory.mktemp("tiny_model")
    tiny_llama.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def _cmd(model: Path, out: Path, *extra: str, per_class: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "hf_gradmm.cli", "synthesize", "--model", str(model), "--output-dir", str(out),
        "--per-class", str(per_class), *SYNTH, *extra,
    ]  # fmt: skip


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _texts(out: Path) -> list[str]:
    rounds = sorted((out / rundir.ROUNDS_DIR).glob("round_*.json"))
    return [t for p in rounds for t in json.loads(p.read_text())["texts"]]


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def finished_run(tiny_dir, tmp_path_factory):
    """One uninterrupted run (3 texts per class, 6 rounds), the reference of the resume tests."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(_cmd(tiny_dir, out, per_class=3), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


# ---------------------------------------------------------------- 1. one process per folder
def test_a_second_run_on_a_locked_folder_is_refused_at_once_and_the_first_finishes(tiny_dir, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "run"
    first = subprocess.Popen(
        _cmd(tiny_dir, out, per_class=8), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(out / rundir.LOCK, first)
    second = subprocess.run(_cmd(tiny_dir, out, "--seed", "7", per_class=8), env=_env(), capture_output=True, text=True)
    assert first.poll() is None  # refused while the first still runs
    assert second.returncode == 1
    assert f"pid {first.pid}" in second.stderr and "in use by another hf-gradmm process" in second.stderr
    assert "--resume" in second.stderr and "another folder" in second.stderr
    assert "Traceback" not in second.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    # Exactly one run's complete output: the first's (seed 42), every round once.
    assert len(load_from_disk(str(out))) == 16 and "seed: 42" in (out / rundir.CONFIG).read_text()
    logged = [json.loads(line) for line in (out / rundir.LOG_HISTORY).read_text().splitlines()]
    assert sorted(e["round"] for e in logged if "round_final_distance" in e) == list(range(16))
    assert not (out / rundir.LOCK).exists()  # released (and removed) at the end


def test_folder_lock_is_reentrant_and_refuses_a_second_holder_in_python(tmp_path):
    folder = tmp_path / "f"
    with rundir.folder_lock(folder, "test"):
        with rundir.folder_lock(folder, "test again"):  # the same process: re-entrant
            assert (folder / rundir.LOCK).exists()
        holder = json.loads((folder / rundir.LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "test"
        script = f"from hf_gradmm import rundir\nwith rundir.folder_lock({str(folder)!r}, 'other'): pass"
        env = {k: v for k, v in os.environ.items() if k != rundir.LOCK_ENV}
        other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        assert other.returncode == 1 and f"pid {os.getpid()}" in other.stderr
        # build on a folder in use is refused the same way, before anything loads.
        build = [sys.executable, "-m", "hf_gradmm.cli", "build", str(folder), "--model", "smollm2-135m"]
        built = subprocess.run(build, capture_output=True, text=True, env=env)
        assert built.returncode == 1 and "in use by another hf-gradmm process" in built.stderr
        # A process this one starts (--num-processes: the launcher holds the lock) inherits it.
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert child.returncode == 0, child.stderr
    assert not (folder / rundir.LOCK).exists()
    with rundir.folder_lock(folder, "after"):  # free again
        pass


# ---------------------------------------------------------------- 2. Ctrl-C
def test_ctrl_c_prints_one_line_with_the_rounds_kept_and_the_resume_command(tiny_dir, finished_run, tmp_path):
    out = tmp_path / "run"
    cmd = _cmd(tiny_dir, out, per_class=3)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / rundir.ROUNDS_DIR / "round_0000.json", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = err.strip().splitlines()  # (above it: transformers' loading bar, library warnings)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    kept = len(list((out / rundir.ROUNDS_DIR).glob("round_*.json")))
    assert lines[-1].startswith(f"interrupted: {kept} finished round(s) kept in {out}; continue with: ")
    assert lines[-1].endswith("--resume") and "synthesize" in lines[-1]
    resumed = subprocess.run([*cmd, "--resume"], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _texts(out) == _texts(finished_run)


# ---------------------------------------------------------------- 3. an unreadable round file
def test_a_truncated_round_file_is_made_again_and_the_good_rounds_are_untouched(tiny_dir, finished_run, tmp_path):
    out = tmp_path / "run"
    subprocess.run(["cp", "-r", str(finished_run), str(out)], check=True)
    cut = out / rundir.ROUNDS_DIR / "round_0002.json"
    cut.write_text(cut.read_text()[:57])  # as a full disk or a non-atomic copy leaves it
    good = {k: v for k, v in _checksums(out / rundir.ROUNDS_DIR).items() if k != cut.name}
    resumed = subprocess.run(_cmd(tiny_dir, out, "--resume", per_class=3), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "round_0002.json is unreadable" in resumed.stderr and "made again" in resumed.stderr
    after = _checksums(out / rundir.ROUNDS_DIR)
    assert {k: after[k] for k in good} == good  # the good rounds were not rewritten
    assert _texts(out) == _texts(finished_run)  # the redone round is the same round
    logged = (out / rundir.LOG_HISTORY).read_text()
    assert "round_0002.json is unreadable" in logged  # said in the log too


def test_an_unreadable_run_state_names_the_file_and_the_fix(tmp_path):
    folder = tmp_path / "run"
    (folder / rundir.ROUNDS_DIR).mkdir(parents=True)
    (folder / rundir.RUN_STATE).write_text('{"config": {"per_cl')
    with pytest.raises(rundir.SynthesisError, match="run_state.json is unreadable.*another --output-dir"):
        rundir.open_run(folder, {"config": {}}, resume=True)


def test_a_changed_configuration_names_the_folders_settings_as_flags(tmp_path):
    """A resume whose settings differ from the folder's (e.g. after a default changed) is refused with
    the folder's own values as flags, so the user can resume as it was made; nothing is written."""
    import json

    folder = tmp_path / "run"
    (folder / rundir.ROUNDS_DIR).mkdir(parents=True)
    saved = {"config": {"target_checkpoints": "theta0", "per_class": 10}}
    (folder / rundir.RUN_STATE).write_text(json.dumps(saved))
    wanted = {"config": {"target_checkpoints": "trajectory:4/4", "per_class": 10}}
    with pytest.raises(rundir.SynthesisError) as refused:
        rundir.open_run(folder, wanted, resume=True)
    message = str(refused.value)
    assert "configuration changed (config.target_checkpoints)" in message
    assert "--target-checkpoints theta0" in message and "--per-class" not in message
    assert json.loads((folder / rundir.RUN_STATE).read_text()) == saved


# ---------------------------------------------------------------- 6. unusable output folders, before loading
def test_an_output_dir_that_is_a_file_is_refused_before_the_model_loads(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert main(["synthesize", "--model", str(tmp_path / "no_such_model"), "--output-dir", str(target)]) == 1
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "--output-dir" in err
    assert target.read_text() == "keep me"  # and the (missing) model was never looked at


def _read_only(folder: Path):
    """Make ``folder`` unwritable, also for root (the immutable attribute), or skip."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return lambda: folder.chmod(0o700)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot make a folder read-only for root here (no chattr)")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_an_unwritable_output_dir_is_refused_before_the_model_loads(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    undo = _read_only(parent)
    try:
        assert main(["synthesize", "--model", str(tmp_path / "none"), "--output-dir", str(parent / "run")]) == 1
    finally:
        undo()
    err = capsys.readouterr().err
    assert "is not writable" in err and "Choose a folder you can write to" in err
    assert list(parent.iterdir()) == []


def test_too_little_free_space_is_refused(tmp_path):
    with pytest.raises(rundir.SynthesisError, match="MiB free on its disk.*Free some space"):
        rundir.check_output_dir(tmp_path / "run", needed_bytes=2**62)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 0. DP: build and push exit 0
def test_build_and_push_of_a_dp_run_exit_0(tiny_dir, tmp_path, hub, capsys):
    out = tmp_path / "dp"
    args = [*SYNTH, "--per-class", "2", "--dp-epsilon", "4", "--dp-delta", "1e-5", "--heldout-examples", "0"]
    assert main(["synthesize", "--model", str(tiny_dir), "--output-dir", str(out), *args]) == 0
    # the label filter off: the random tiny model's filter may drop every text (refused, tested below)
    build = ["--min-words", "0", "--label-filter", "off"]
    assert main(["build", str(out), "--model", str(tiny_dir), *build]) == 0
    printed = capsys.readouterr().out
    assert "not published (differential privacy" in printed
    assert main(["push", str(out), "--repo-id", "someone/dp-texts"]) == 0
    assert "pushed" in capsys.readouterr().out


# ---------------------------------------------------------------- 9. an empty class
def test_a_build_that_empties_a_class_is_refused_naming_the_filter(tmp_path, tiny_dir, capsys):
    rows = [_row("A warm and funny film with a great cast.", 1), _row("So dull.", 0)]  # "So dull." is too short
    folder = write_synthesis_dir(tmp_path / "synth", rows, generator=str(tiny_dir))
    before = _checksums(folder)
    assert main(["build", str(folder), "--label-filter", "off"]) == 1
    err = capsys.readouterr().err
    assert "would leave a class empty" in err and "all 1 texts of class 'negative' were removed (too_short 1)" in err
    assert "--allow-empty-classes" in err and "--min-words 0" in err
    assert _checksums(folder) == before  # nothing written
    assert main(["build", str(folder), "--label-filter", "off", "--allow-empty-classes"]) == 0
    report = json.loads((folder / "dataset" / rundir.BUILD_REPORT).read_text())
    assert report["per_class"]["negative"] == {"texts": 0, "mean_match_distance": None, "mean_nll": None,
                                               "perplexity": None}  # fmt: skip
    assert "| negative | 0 | n/a | n/a | n/a |" in (folder / "dataset" / "README.md").read_text()


def test_a_build_left_with_no_text_is_refused_even_with_allow_empty_classes(tmp_path, tiny_dir, capsys):
    """`datasets` cannot save a dataset of no rows: a build every filter emptied says so, and writes nothing."""
    rows = [_row("So dull.", 0), _row("Very good.", 1)]  # both too short
    folder = write_synthesis_dir(tmp_path / "synth", rows, generator=str(tiny_dir))
    before = _checksums(folder)
    assert main(["build", str(folder), "--label-filter", "off", "--min-words", "5", "--allow-empty-classes"]) == 1
    err = capsys.readouterr().err
    assert "would leave no text at all" in err and "not every class" in err and "Nothing was written" in err
    assert _checksums(folder) == before


# ---------------------------------------------------------------- killed at random moments
@pytest.mark.slow
def test_killed_at_five_random_moments_and_resumed_each_time_gives_the_uninterrupted_texts(
    tiny_dir, finished_run, tmp_path
):
    """SIGKILL at 5 seeded random moments across the rounds, a resume after each: no round file is
    ever half-written, and the final texts equal the uninterrupted run's. (Each kill costs a fresh
    process start, ~10 s on 2 cores; ten kills doubled the suite's longest test for no new path.)"""
    out, rng = tmp_path / "run", random.Random(18)
    cmd = _cmd(tiny_dir, out, per_class=3)
    kills = 0
    log = out / rundir.LOG_HISTORY
    while kills < 5:
        seen = log.stat().st_size if log.exists() else 0
        proc = subprocess.Popen(
            cmd + (["--resume"] if kills else []), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        while proc.poll() is None and (log.stat().st_size if log.exists() else 0) == seen:
            time.sleep(0.02)  # until it logs: set-up done, inside a round
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:  # it finished first
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        for path in (out / rundir.ROUNDS_DIR).glob("round_*.json"):
            json.loads(path.read_text())  # whole, every time
    assert kills >= 4, kills  # the kills landed inside the run, not after it
    done = subprocess.run([*cmd, "--resume"], env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _texts(out) == _texts(finished_run)
