"""The lock, .ci/run and README agree: CI installs the lock, lints, then runs README's test command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = (REPO / "requirements-lock.txt").read_text(encoding="utf-8")
README = (REPO / "README.md").read_text(encoding="utf-8")
CI_RUN = (REPO / ".ci" / "run").read_text(encoding="utf-8")


def names(text: str) -> set[str]:
    """Package names of a requirements file, normalised (PEP 503)."""
    out = set()
    for line in text.splitlines():
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#")[0].strip())
        if m and not line.startswith("-"):
            out.add(re.sub(r"[-_.]+", "-", m[1]).lower())
    return out


def test_readme_is_a_landing_page():
    assert len(README.splitlines()) <= 200, "README is a landing page; longer stories go to benchmarks/README.md"


def test_readme_gives_the_command_that_made_the_lock():
    """The lock's header (written by uv) names its command; README documents the same one."""
    command = re.search(r"^#\s+(uv pip compile .*)$", LOCK, flags=re.M)[1]
    assert command in README
    assert "pip install -r requirements-lock.txt" in README


def test_lock_pins_everything_requirements_ask_for():
    requirements = names((REPO / "requirements.txt").read_text(encoding="utf-8"))
    assert requirements <= names(LOCK)
    assert {"ruff", "codespell", "check-jsonschema"} <= requirements
    for line in LOCK.splitlines():
        if line and not line.startswith(("#", " ", "-e ")):
            assert re.match(r"[a-z0-9._-]+==\S+( ; .+)?$", line), f"not an exact pin: {line!r}"


def test_lock_holds_the_cpu_torch_without_cuda_packages():
    assert re.search(r"^torch==2\.13\.0$", LOCK, flags=re.M)
    assert not re.search(r"^(nvidia-|triton|cuda-)", LOCK, flags=re.M)


def test_ci_installs_the_lock_and_lints_before_readmes_test_command():
    commands = [line.strip() for line in CI_RUN.splitlines() if line.strip() and not line.strip().startswith("#")]
    lock = next(i for i, c in enumerate(commands) if c.endswith("-r requirements-lock.txt"))
    torch = next(i for i, c in enumerate(commands) if c.endswith("torch==2.13.0"))
    assert torch < lock < commands.index("ruff check .") < commands.index("codespell") < commands.index("pytest")
    assert commands[-1] == "pytest"
    assert "-r requirements.txt" not in CI_RUN
    # README's Quickstart gives the same test command.
    assert re.search(r"^pytest\s+# the tests", README, flags=re.M)
