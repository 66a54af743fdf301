"""The README's commands as a new user copies them: they work as written, and what
they need is installed or said."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.server import RunningServer

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _run(cwd: Path, *command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    ran = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
    return ran


def test_the_push_example_makes_its_model_onnx_and_runs_as_written(
    fresh_server: RunningServer, tmp_path: Path
) -> None:
    (make,) = [block for block in _blocks("python") if '"model.onnx"' in block]
    (commands,) = [block for block in _blocks("bash") if "maas models push model.onnx" in block]
    env = {**os.environ, "MAAS_URL": fresh_server.url, "MAAS_API_KEY": fresh_server.api_key or ""}
    _run(tmp_path, sys.executable, "-c", make, env=env)
    assert (tmp_path / "model.onnx").exists()
    outputs = []
    for line in commands.strip().splitlines():
        command = line.split("  #", 1)[0].strip()
        assert command.startswith("maas "), command
        args = [a.strip("'") for a in re.findall(r"'[^']*'|\S+", command)][1:]
        outputs.append(_run(tmp_path, sys.executable, "-m", "maas", *args, env=env).stdout)
    assert "defects:1" in outputs[0]
    assert '"label"' in outputs[-1] and '"probabilities"' in outputs[-1], outputs[-1]


def test_what_the_examples_use_is_installed_or_said() -> None:
    text = README.read_text()
    chat = text[text.index("## Chat, completions") : text.index("from openai import OpenAI")]
    command_1 = _blocks("bash")[0]
    # The chat example needs openai: command 1 installs it, and the section says so, or
    # the section says how to install it.
    said = " openai" in command_1 and "command 1 installs `openai`" in chat
    assert said or "pip install openai" in chat
    bash = "\n".join(_blocks("bash"))
    first_use = bash.index("$MAAS_API_KEY")
    assert "export MAAS_API_KEY=" in bash[:first_use], "curl sends a key never exported"
    minilm = text[text.index("Transformers models optimize too") :][:400]
    assert "text_column" in minilm
    assert "https://download.pytorch.org/whl/cpu" in text  # the CPU build of torch
    pyproject = (README.parent / "pyproject.toml").read_text()
    assert "never resolves a CUDA build" not in pyproject


def test_serving_classic_models_never_imports_torch(iris_skops: Path) -> None:
    """Reading a .skops file (at push, in the server) imports skops, which would pull
    torch through scikit-learn's array-API shim: seconds to a minute for nothing."""
    probe = (
        "import sys; from pathlib import Path; "
        "import maas.cli.main, maas.api.app, maas.services, maas.jobs.manager, "
        "maas.runtimes.catalog, maas.runtimes.onnx, maas.client; "
        "from maas.runtimes.sklearn import SklearnRuntime, load_estimator; "
        f"SklearnRuntime(load_estimator(Path({str(iris_skops)!r}), trust_pickle=False)); "
        "print('torch' in sys.modules)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    assert ran.stdout.strip() == "False", ran.stderr
