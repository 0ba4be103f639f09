"""The speed-regression gate: statistic, baselines, and the CPU end-to-end check CI relies on."""

from __future__ import annotations

import argparse
import json
import random

import pytest

from suite.app.commands import bench as bench_cmd
from suite.bench.gate import compare_rows, load_baseline, save_baseline
from suite.errors import UserError


def _bench(argv: list[str]) -> int:
    """Run ``suite bench ...`` in-process; a UserError becomes exit 2 as in the CLI."""
    parser = argparse.ArgumentParser()
    bench_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", *argv])
    try:
        return args.handler(args)
    except UserError:
        return 2


def _row(samples, kernel="k", impl="reference", norm=None):
    return {"kernel": kernel, "impl": impl, "shape": "8x8", "dtype": "float32",
            "samples_ms": samples, "normalized_samples": norm or samples}


def _noisy(rng, median, n=15, rel=0.05, outliers=2):
    xs = [median * (1 + rng.gauss(0, rel)) for _ in range(n)]
    for i in range(outliers):  # one-sided spikes: another process took the core
        xs[i] *= 3
    return xs


def test_identical_distributions_pass():
    rng = random.Random(0)
    base = [_row(_noisy(rng, 1.0))]
    new = [_row(_noisy(rng, 1.0))]
    (c,) = compare_rows(base, new)
    assert c.verdict == "ok"


def test_doubled_time_is_flagged():
    rng = random.Random(1)
    (c,) = compare_rows([_row(_noisy(rng, 1.0))], [_row(_noisy(rng, 2.0))])
    assert c.verdict == "slower"
    assert c.ratio == pytest.approx(2.0, rel=0.15)


def test_slowdown_within_threshold_is_not_flagged():
    rng = random.Random(2)
    (c,) = compare_rows([_row(_noisy(rng, 1.0, rel=0.01))], [_row(_noisy(rng, 1.05, rel=0.01))])
    assert c.verdict == "ok"
    (c,) = compare_rows([_row(_noisy(rng, 1.0, rel=0.01))], [_row(_noisy(rng, 1.05, rel=0.01))],
                        threshold=0.02)
    assert c.verdict == "slower"


def test_wide_noise_band_absorbs_a_moderate_shift():
    """A 20% shift on samples that scatter by +-40% is not evidence of a regression."""
    rng = random.Random(3)
    base = [1.0 * (1 + rng.uniform(-0.6, 0.6)) for _ in range(15)]
    new = [1.2 * (1 + rng.uniform(-0.6, 0.6)) for _ in range(15)]
    (c,) = compare_rows([_row(base)], [_row(new)])
    assert c.band > 0.2
    assert c.verdict == "ok"


def test_faster_missing_and_new_cases_never_fail():
    rng = random.Random(4)
    base = [_row(_noisy(rng, 2.0)), _row(_noisy(rng, 1.0), kernel="gone")]
    new = [_row(_noisy(rng, 1.0)), _row(_noisy(rng, 1.0), kernel="added")]
    verdicts = {c.kernel: c.verdict for c in compare_rows(base, new)}
    assert verdicts == {"k": "faster", "gone": "missing", "added": "new"}


def test_machine_slowdown_is_drift_not_regression():
    rng = random.Random(5)
    # Absolute times doubled (a slower machine), but so did the calibration op.
    base = [_row(_noisy(rng, 1.0), norm=_noisy(rng, 0.5))]
    new = [_row(_noisy(rng, 2.0), norm=_noisy(rng, 0.5))]
    assert compare_rows(base, new)[0].verdict == "drift"
    assert compare_rows(base, new, normalized=True)[0].verdict == "ok"
    # The kernel itself got slower: both statistics see it.
    new = [_row(_noisy(rng, 2.0), norm=_noisy(rng, 1.0))]
    assert compare_rows(base, new)[0].verdict == "slower"
    assert compare_rows(base, new, normalized=True)[0].verdict == "slower"


def test_baseline_roundtrip_and_errors(tmp_path):
    rows = [_row([1.0, 1.1, 0.9])]
    path = save_baseline(tmp_path, "main", rows, {"device": "cpu"})
    assert json.loads(path.read_text())["rows"] == rows
    assert load_baseline(tmp_path, "main")["rows"] == rows
    with pytest.raises(UserError, match="suite bench kernels --save nope"):
        load_baseline(tmp_path, "nope")
    with pytest.raises(UserError, match="plain file name"):
        save_baseline(tmp_path, "../x", rows, {})
    path.write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        load_baseline(tmp_path, "main")


GATE_ARGS = ["kernels", "--kernels", "lora_forward", "--impls", "reference", "--rounds", "11"]


def test_gate_end_to_end_on_cpu(tmp_path, monkeypatch, capsys):
    """Save, re-run unchanged (exit 0), plant a slowdown (exit 1): the check CI runs.

    CPU implementations only, normalised and absolute, on whatever load the machine has.
    """
    from suite.kernels.lora import LoraForward

    store = str(tmp_path)
    assert _bench([*GATE_ARGS, "--store", store, "--save", "b", "--device", "cpu"]) == 0
    assert _bench([*GATE_ARGS, "--store", store, "--compare", "b", "--device", "cpu"]) == 0
    assert _bench([*GATE_ARGS, "--store", store, "--compare", "b", "--normalized",
                   "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "no regression against baseline 'b'" in out

    original = LoraForward.reference

    def planted(self, *inputs):  # the planted slowdown: the work done twice
        original(self, *inputs)
        return original(self, *inputs)

    monkeypatch.setattr(LoraForward, "reference", planted)
    assert _bench([*GATE_ARGS, "--store", store, "--compare", "b", "--normalized",
                   "--device", "cpu"]) == 1
    assert _bench([*GATE_ARGS, "--store", store, "--compare", "b", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "SLOWER" in out
    assert "confirmed: lora_forward/reference" in out and "not confirmed" not in out

    from suite.results import ResultStore
    from suite.results.schema import KERNEL_COLUMNS

    frame = ResultStore(store).load("kernels")
    assert list(frame.columns) == KERNEL_COLUMNS
    assert len(frame) == 5 and frame["correct"].all()
    assert (frame["time_ms"] > 0).all() and (frame["peak_gbps"] > 0).all()


def test_a_slowdown_that_does_not_reproduce_is_not_a_regression(tmp_path, monkeypatch, capsys):
    """Load elsewhere on the machine during one measurement: the case is re-measured
    (``--confirm``) and, no longer slower, is not reported as a regression."""
    from suite.bench import harness
    from suite.kernels.lora import LoraForward

    store = str(tmp_path)
    assert _bench([*GATE_ARGS, "--store", store, "--save", "b", "--device", "cpu"]) == 0
    original, measure = LoraForward.reference, harness.run_bench
    transient = {"on": True}

    def planted(self, *inputs):  # twice the work, during the first measurement only
        if transient["on"]:
            original(self, *inputs)
        return original(self, *inputs)

    def measure_then_calm(*args, **kwargs):
        try:
            return measure(*args, **kwargs)
        finally:
            transient["on"] = False

    monkeypatch.setattr(LoraForward, "reference", planted)
    monkeypatch.setattr(harness, "run_bench", measure_then_calm)
    assert _bench([*GATE_ARGS, "--store", store, "--compare", "b", "--normalized", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "SLOWER" in out  # the first measurement saw it ...
    assert "not confirmed: lora_forward/reference" in out  # ... the re-measurement did not
    assert "no regression against baseline 'b'" in out


@pytest.mark.parametrize("argv, message", [
    (["kernels", "--kernels", "nope"], "unknown kernel 'nope'"),
    (["kernels", "--kernels", "lora_forward", "--shapes", "12xab"], "cannot parse shape"),
    (["kernels", "--kernels", "lora_forward", "--shapes", "64x64"], "takes shapes of 4 sizes"),
    (["kernels", "--kernels", "lora_forward", "--dtype", "fp32"], "does not support dtype"),
    (["kernels", "--kernels", "lora_forward", "--shapes", "64x64x64x256"], "rank R <= 128"),
    (["kernels", "--kernels", "lora_forward", "--impls", "cuda_magic"], "unknown impl"),
    (["kernels", "--compare", "never-saved"], "no kernel baseline 'never-saved'"),
    (["kernels", "--threshold", "-1"], "must be a finite relative slowdown"),
    (["kernels", "--threshold", "nan"], "must be a finite relative slowdown"),
    (["kernels", "--threshold", "inf"], "must be a finite relative slowdown"),
    (["kernels", "--alpha", "0"], "must be a probability"),
    (["kernels", "--alpha", "nan"], "must be a probability"),
    (["kernels", "--compare", "x", "--rounds", "4"], "only with 5 samples per run"),
    (["kernels", "--confirm", "-1"], "--confirm -1 is negative"),
])
def test_user_errors_are_one_clear_message(tmp_path, argv, message):
    parser = argparse.ArgumentParser()
    bench_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", *argv, "--store", str(tmp_path), "--device", "cpu"])
    with pytest.raises(UserError, match=message):
        args.handler(args)


def test_gpu_only_impl_named_on_cpu_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    parser = argparse.ArgumentParser()
    bench_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "kernels", "--kernels", "lora_forward", "--impls", "triton",
                              "--store", str(tmp_path), "--device", "cpu"])
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        args.handler(args)


def test_cli_exit_codes_through_the_real_command(tmp_path):
    """`suite bench kernels --save b && suite bench kernels --compare b` as a user runs it."""
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "suite.app.cli", "bench", "kernels", *args,
                               "--store", str(tmp_path), "--device", "cpu"],
                              capture_output=True, text=True, timeout=300)

    common = ["--kernels", "quantize_int8_row", "--impls", "reference", "--rounds", "7"]
    saved = run(*common, "--save", "b")
    assert saved.returncode == 0, saved.stderr
    compared = run(*common, "--compare", "b")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "no regression" in compared.stdout
    bad = run("--kernels", "quantize_mxfp5")
    assert bad.returncode == 2
    assert "Did you mean" in bad.stderr and "Traceback" not in bad.stderr


def test_the_test_can_always_reach_alpha_or_the_gate_refuses():
    """The smallest one-sided Mann-Whitney p of n vs m samples is 1/C(n+m, n); too few samples
    could never flag a slowdown, which the gate refuses instead of silently passing."""
    from suite.bench.gate import min_rounds, smallest_p

    assert smallest_p(3, 3) == pytest.approx(1 / 20) and smallest_p(5, 5) == pytest.approx(1 / 252)
    assert min_rounds(0.01) == 5 and min_rounds(0.05) == 4 and min_rounds(0.001) == 7
    from scipy.stats import mannwhitneyu

    assert mannwhitneyu([2.0] * 5, [1.0] * 5, alternative="greater", method="exact").pvalue == \
        pytest.approx(smallest_p(5, 5))
    base = [_row([1.0, 1.1, 0.9])]
    new = [_row([103.0, 104.0, 102.0])]
    with pytest.raises(UserError, match="can never show a slowdown at alpha=0.01"):
        compare_rows(base, new, alpha=0.01)
    (verdict,) = compare_rows([_row([1.0, 1.1, 0.9, 1.05, 0.95])],
                              [_row([103.0, 104.0, 102.0, 103.5, 102.5])], alpha=0.01)
    assert verdict.verdict == "slower"
    with pytest.raises(UserError, match="finite"):
        compare_rows(base, new, threshold=float("nan"))


def test_rows_record_the_suites_commit_not_the_current_directorys(tmp_path, monkeypatch):
    """Run from another git checkout: the rows name the suite's own commit (or its version when
    the suite is not a checkout), never the commit of wherever the user stands."""
    import subprocess
    from pathlib import Path

    import suite
    from suite import __version__
    from suite.bench import harness

    other = tmp_path / "elsewhere"
    other.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(other)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    theirs = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(other)
    root = Path(suite.__file__).resolve().parent.parent
    top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True).stdout.strip()
    ours = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    commit = harness.git_commit()
    assert theirs not in commit
    if top and Path(top).resolve() == root:
        assert commit.split("+")[0] == ours
    else:
        assert commit == f"v{__version__}"


def test_every_row_carries_the_run_id_and_start_time(tmp_path):
    import datetime as dt

    from suite.results import ResultStore

    assert _bench(["kernels", "--kernels", "quantize_int8_row", "--impls", "reference", "--rounds", "3",
                   "--store", str(tmp_path), "--device", "cpu"]) == 0
    frame = ResultStore(tmp_path).load("kernels")
    assert len(frame) >= 1 and frame["run_id"].nunique() == 1 and frame["timestamp"].nunique() == 1
    assert frame["run_id"].iloc[0] and (frame["status"] == "ok").all()
    started = dt.datetime.strptime(frame["timestamp"].iloc[0], "%Y-%m-%dT%H:%M:%SZ")
    assert abs((dt.datetime.utcnow() - started).total_seconds()) < 3600
    assert set(frame["roof"]) <= {"memory", "compute"} and frame["peak_tflops_dtype"].iloc[0]


def test_a_bad_shape_for_one_kernel_fails_only_that_kernels_rows(tmp_path, capsys):
    """64x64 fits quantize_int8_row (M x N) but not lora_forward (M x N x K x R): lora_forward's
    rows are written as failed with the reason, quantize_int8_row's are measured and written,
    and the exit status says something failed."""
    from suite.results import ResultStore

    code = _bench(["kernels", "--kernels", "lora_forward,quantize_int8_row", "--impls", "reference",
                   "--shapes", "64x64", "--rounds", "3", "--store", str(tmp_path), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "1 case(s) could not be measured" in err and "takes shapes of 4 sizes" in err
    frame = ResultStore(tmp_path).load("kernels")
    lora = frame[frame["kernel"] == "lora_forward"]
    quant = frame[frame["kernel"] == "quantize_int8_row"]
    assert len(lora) == 1 and (lora["status"] == "failed").all()
    assert lora["error"].str.contains("takes shapes of 4 sizes").all() and lora["time_ms"].isna().all()
    assert len(quant) == 1 and (quant["status"] == "ok").all() and (quant["time_ms"] > 0).all()
    assert frame["run_id"].nunique() == 1
