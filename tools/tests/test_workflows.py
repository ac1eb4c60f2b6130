"""The GitHub workflows: valid against GitHub's workflow schema, portable, and in step with .ci/run.

They cannot run here, so this checks what can be checked offline: check-jsonschema's copy of the
schema (vendored in the package, no network), then the rules that keep them portable across
ubuntu, macOS and Windows runners, where a `run` goes to bash on the first two and to PowerShell
on Windows.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the workflows (pip install -r requirements.txt)")

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
LOCK = REPO / "requirements-lock.txt"


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict):
    """(job name, job, step) for every step of every job."""
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield name, job, step


def without_expressions(text: str) -> str:
    return re.sub(r"\$\{\{.*?\}\}", "EXPR", text)


def test_both_workflows_exist():
    assert {"gpt2-weekly.yml", "tests.yml"} <= {p.name for p in WORKFLOWS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_github_schema(path):
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (requirements.txt)")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True, encoding="utf-8",
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_run_is_one_portable_command(path):
    """One command per `run`: PowerShell does not stop at a failing line of a multi-line script, and
    operators, `$VAR`, redirections and `\\` continuations mean different things (or nothing) there."""
    for job_name, job, step in steps(load(path)):
        assert "shell" not in step, f"{path.name}/{job_name}: {step.get('name')!r} picks a shell"
        if "run" not in step:
            continue
        command = step["run"].strip()
        assert "\n" not in command, f"{path.name}/{job_name}: {step.get('name')!r} runs several lines"
        # Look outside quoted arguments (a `python -c "...; ..."` is one command) and expressions.
        bare = re.sub(r"\"[^\"]*\"|'[^']*'", "ARG", without_expressions(command))
        for token in ("&&", "||", ";", "|", "$", "`", ">", "<", "\\", "export ", "source "):
            assert token not in bare, f"{path.name}/{job_name}: {command!r} uses {token!r}"
    for job_name, job in load(path)["jobs"].items():
        assert "shell" not in job.get("defaults", {}).get("run", {}), f"{path.name}/{job_name} sets a shell"
    assert "shell" not in load(path).get("defaults", {}).get("run", {})


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_paths_are_relative_or_expressions(path):
    """Paths work on every runner: relative to the checkout, or built by GitHub (${{ runner.temp }})."""
    for job_name, job, step in steps(load(path)):
        with_ = step.get("with", {})
        paths = str(with_.get("path", "")).split("\n") + [str(step.get("working-directory", ""))]
        for p in filter(None, (p.strip() for p in paths)):
            assert p.startswith("${{") or not (p.startswith(("/", "~")) or re.match(r"[A-Za-z]:", p)), (
                f"{path.name}/{job_name}: absolute path {p!r}")
            assert "\\" not in without_expressions(p), f"{path.name}/{job_name}: backslash in {p!r}"
        for value in [step.get("run", "")] + [str(v) for v in step.get("env", {}).values()]:
            bare = without_expressions(value)
            assert not re.search(r"(^|\s)(/|~/|[A-Za-z]:\\)", bare), f"{path.name}/{job_name}: {value!r}"


def test_tests_run_in_fast_mode_on_three_systems_and_two_pythons():
    workflow = load(REPO / ".github" / "workflows" / "tests.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    job = workflow["jobs"]["tests"]
    matrix = job["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest", "windows-latest"}
    assert matrix["python-version"][0] == "3.10" and len(matrix["python-version"]) == 2
    assert job["env"]["FAST_DEV_RUN"] == "1"
    runs = [step.get("run") for _, _, step in steps(workflow)]
    # README's test command, as in .ci/run, after the lock and the lint.
    assert runs[-1] == "pytest"
    assert "python -m pip install -r requirements-lock.txt" in runs
    assert runs.index("ruff check .") < runs.index("pytest") and "codespell" in runs
    cached = [step for _, _, step in steps(workflow) if step.get("uses", "").startswith("actions/cache@")]
    assert len(cached) == 1 and "data" in cached[0]["with"]["path"].split("\n")


def test_weekly_job_is_scheduled_and_reaches_gpt2():
    workflow = load(REPO / ".github" / "workflows" / "gpt2-weekly.yml")
    assert "schedule" in workflow["on"] and "workflow_dispatch" in workflow["on"]
    assert len(workflow["on"]["schedule"]) == 1
    job = workflow["jobs"]["gpt2"]
    assert job["env"]["FAST_DEV_RUN"] == "1"
    assert not {"GPT2_DIR", "DATA_MIRROR", "HF_HUB_OFFLINE"} & set(job["env"]), "the weekly job downloads"
    assert not any(step.get("uses", "").startswith("actions/cache@") for _, _, step in steps(workflow))
    runs = " ".join(step.get("run", "") for _, _, step in steps(workflow))
    assert "load_gpt2(n)" in runs and "'gpt2', 'gpt2-medium'" in runs  # the hub path, verified
    assert "tools/tests/test_gpt2_branches.py" in runs and "test_chat_gpt2.py" in runs  # every GPT-2 branch


def test_torch_pin_is_the_same_everywhere():
    """The workflows, .ci/run and the lock install one torch version."""
    (locked,) = re.findall(r"^torch==(\S+)$", LOCK.read_text(encoding="utf-8"), flags=re.M)
    texts = [p.read_text(encoding="utf-8") for p in WORKFLOWS] + [(REPO / ".ci" / "run").read_text(encoding="utf-8")]
    pins = {pin for text in texts for pin in re.findall(r"torch==([0-9][^\s\"']*)", text)}
    assert pins == {locked}
