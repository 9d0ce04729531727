"""The numpyro-flows command line: fit on a user's model file, bad input, the demo.

Most commands run in this process through ``main``; a subprocess only where the test needs
one (the installed script, float64, the umask, Ctrl-C, a run report's exit code). The
demo's end-to-end run is marked ``slow``.
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from numpyro_flows.cli import main, write_atomically

MODEL_FILE = """
import numpyro
import numpyro.distributions as dist


def model(y, scale=1.0):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", dist.Normal(mu, sigma * scale), obs=y)


def discrete(y):
    numpyro.sample("k", dist.Bernoulli(0.5))


def broken(y):
    raise RuntimeError("something inside the model")


def nested(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("data", len(data["y"])):
        numpyro.sample("y", dist.Normal(mu, sigma * data["scale"]), obs=data["y"])
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    (tmp_path / "data.json").write_text(json.dumps({"y": [1.0, 2.5, 0.3, 1.7, 2.2]}))
    return tmp_path


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_writes_inference_data(files, capsys):
    from numpyro_flows._arviz_import import import_arviz

    az = import_arviz()
    out = files / "posterior.nc"
    code, stdout, _ = run(
        [
            "fit",
            f"{files / 'mymodel.py'}:model",
            "--data",
            str(files / "data.json"),
            "--out",
            str(out),
            "--steps",
            "300",
            "--num-samples",
            "100",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    assert "k-hat" in stdout
    idata = az.from_netcdf(out)
    assert idata.posterior["mu"].shape == (1, 100)
    assert np.all(idata.posterior["sigma"].values > 0)
    assert "log_likelihood" in idata.groups()


@pytest.mark.parametrize(
    "model_arg, data, message",
    [
        ("missing.py:model", None, "not found"),
        ("mymodel.py:nothere", None, "has no function 'nothere'"),
        ("mymodel.py:model", {"z": [1.0]}, "do not match the model's arguments"),
        ("mymodel.py:discrete", {"y": [1.0]}, "discrete latent site 'k'"),
        ("mymodel.py:broken", {"y": [1.0]}, "RuntimeError: something inside the model"),
        ("mymodel.py", None, "path/to/file.py:function"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(files, capsys, model_arg, data, message):
    out = files / "posterior.nc"
    out.write_bytes(b"previous result")
    args = ["fit", str(files / model_arg), "--out", str(out), "--steps", "5", "--quiet"]
    args += ["--force"]  # the existing --out is not the problem here
    if data is not None:
        (files / "bad.json").write_text(json.dumps(data))
        args += ["--data", str(files / "bad.json")]
    code, _, err = run(args, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out.read_bytes() == b"previous result"  # never touched


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "result.nc"
    path.write_bytes(b"old")

    def failing(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(path, failing)
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def command():
    exe = shutil.which("numpyro-flows")
    return [exe] if exe else [sys.executable, "-m", "numpyro_flows.cli"]


def run_command(args, **kwargs):
    """The real console script in a subprocess."""
    return subprocess.run(
        [*command(), *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs
    )


def test_console_script_is_installed():
    result = run_command(["--help"])
    assert result.returncode == 0
    assert "demo" in result.stdout and "fit" in result.stdout


def test_help_shows_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, default in [
        ("--max-steps", "30000"),
        ("--lr", "0.003"),
        ("--particles", "16"),
        ("--num-samples", "1000"),
        ("--num-warmup", "1000"),
        ("--num-chains", "4"),
        ("--seed", "0"),
        ("--guide", "default"),
    ]:
        after = text.split(option, 2)[-1]  # the option's own help, after the usage line
        assert f"(default: {default})" in after.split("--", 1)[0], option
    assert "--strict" in text and "--force" in text and "exit codes" in text
    assert "until the loss stops improving" in text  # --steps: fit_guide's schedule


def test_bad_data_and_an_existing_out_are_refused_in_one_line(files, capsys):
    out = files / "posterior.nc"
    out.write_bytes(b"previous result")
    (files / "nan.json").write_text('{"data": {"y": [1.0, NaN], "scale": 1.0}}')
    args = ["fit", f"{files / 'mymodel.py'}:nested", "--data", files / "nan.json", "--out", out]
    code, _, err = run(list(map(str, args)), capsys)
    assert code == 2
    assert "data['y'][1] is NaN" in err
    assert len(err.strip().splitlines()) == 1
    args = ["fit", f"{files / 'mymodel.py'}:model", "--data", files / "data.json", "--out", out]
    code, _, err = run(list(map(str, args)), capsys)
    assert code == 2
    assert "already exists; pass --force" in err
    assert out.read_bytes() == b"previous result"


@pytest.mark.slow
def test_degenerate_weights_fail_the_report_and_strict_exits_3(files):
    """One observation at 1e30 in float64: every importance ratio is swamped. Nested lists
    (a model(data) signature) become arrays; the file gets the umask's mode."""
    (files / "big.json").write_text(
        json.dumps({"data": {"y": [1.0, 2.5, 0.3, 1e30], "scale": 1.0}})
    )
    out = files / "posterior.nc"
    args = ["fit", f"{files / 'mymodel.py'}:nested", "--data", files / "big.json"]
    args += ["--out", out, "--x64", "--strict", "--steps", "50", "--num-samples", "50"]
    result = run_command([*args, "--quiet"], umask=0o027)
    assert result.returncode == 3, result.stderr
    assert "failed: degenerate weights" in result.stdout
    assert "(ok)" not in result.stdout
    assert "--strict" in result.stderr
    assert out.stat().st_mode & 0o777 == 0o640


@pytest.mark.slow
def test_neutra_run_report_flags_short_chains(files):
    out = files / "posterior.nc"
    out.write_bytes(b"previous result")
    args = ["fit", f"{files / 'mymodel.py'}:model", "--data", files / "data.json", "--out", out]
    args += ["--force", "--strict", "--neutra", "--steps", "50", "--num-warmup", "30"]
    args += ["--num-samples", "30", "--num-chains", "1", "--quiet"]
    result = run_command(args)
    assert result.returncode == 3, result.stderr
    assert "guide k-hat" in result.stdout
    for line in ("divergences", "max r-hat", "min bulk ESS", "min tail ESS"):
        assert f"NeuTra-NUTS {line}" in result.stdout, line
    assert "<< BAD" in result.stdout  # 30 draws: ESS < 100
    assert "run more or longer chains" in result.stdout
    assert out.read_bytes() != b"previous result"  # replaced with --force


@pytest.mark.slow
def test_ctrl_c_stops_training_promptly(files):
    args = ["fit", f"{files / 'mymodel.py'}:model", "--data", files / "data.json"]
    args += ["--out", files / "posterior.nc", "--steps", "10000000"]
    # pytest-xdist workers ignore SIGINT and a child inherits that, so the command runs
    # behind a Python that first restores the handler a terminal's process would have
    # (a preexec_fn would fork this JAX process, which JAX warns against).
    restore_ctrl_c = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from numpyro_flows.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", restore_ctrl_c, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        seen, start = b"", time.monotonic()
        while b"loss" not in seen and time.monotonic() - start < 300:
            ready, _, _ = select.select([process.stderr], [], [], 1.0)
            if ready:
                chunk = os.read(process.stderr.fileno(), 4096)
                if not chunk:  # the command ended: waiting longer cannot help
                    break
                seen += chunk
        assert b"loss" in seen, f"training never started: {seen.decode(errors='replace')}"
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert time.monotonic() - interrupted < 10
        assert process.returncode == 130
        assert b"interrupted" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.slow
def test_demo_runs_end_to_end_in_fast_mode(tmp_path, capsys):
    code = main(["demo", "--fast", "--out", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 0
    for row in ("flow guide (SVI)", "NUTS", "NeuTra-NUTS"):
        assert row in out
    for line in ("flow guide k-hat", "NUTS divergences", "NeuTra-NUTS max r-hat"):
        assert line in out
    assert "NeuTra-NUTS min tail ESS" in out
    umask = os.umask(0)
    os.umask(umask)
    for name in ("neutra.nc", "nuts.nc", "guide.nc", "neck.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "khat_verdict" in summary["flow guide (SVI)"]
    # A second run does not replace the outputs without --force.
    code, _, err = run(["demo", "--fast", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--force" in err


def test_demo_checks_its_output_folder_before_any_work(tmp_path, capsys):
    """The quick part of the demo for the default run (the slow run runs it end to end)."""
    (tmp_path / "summary.json").write_text("{}")
    code, _, err = run(["demo", "--fast", "--out", str(tmp_path)], capsys)
    assert code == 2 and "summary.json" in err and "--force" in err
    code, _, err = run(["demo", "--fast", "--out", str(tmp_path / "summary.json")], capsys)
    assert code == 2 and "is a file" in err
