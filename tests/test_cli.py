"""The numpyro-flows command line: fit on a user's model file, bad input, the demo."""

import json
import shutil
import subprocess
import sys

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


def test_console_script_is_installed():
    exe = shutil.which("numpyro-flows")
    cmd = [exe] if exe else [sys.executable, "-m", "numpyro_flows.cli"]
    result = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "demo" in result.stdout and "fit" in result.stdout


def test_demo_runs_end_to_end_in_fast_mode(tmp_path, capsys):
    code = main(["demo", "--fast", "--out", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 0
    for row in ("flow guide (SVI)", "NUTS", "NeuTra-NUTS"):
        assert row in out
    for name in ("neutra.nc", "nuts.nc", "guide.nc", "neck.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
