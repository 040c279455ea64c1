"""The image's promises, read from the Dockerfile (no Docker engine in CI): pinned uv, code the
service cannot write, a liveness health check with a start period, no local state sent to the
build."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def runtime_stage() -> str:
    return DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]


def test_uv_is_pinned() -> None:
    assert re.search(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ ", DOCKERFILE)
    assert "pip install uv\n" not in DOCKERFILE


def test_the_service_runs_unprivileged_and_cannot_write_its_code() -> None:
    stage = runtime_stage()
    users = re.findall(r"^USER (\S+)", stage, re.MULTILINE)
    assert users == ["paysvc"]
    copies = re.findall(r"^COPY .*$", stage, re.MULTILINE)
    assert copies and not any("--chown" in line for line in copies)  # root-owned code
    assert "chown paysvc:paysvc /data" in stage  # the one writable place
    assert "compileall" in DOCKERFILE  # no bytecode to write at run time


def test_healthcheck_is_liveness_with_a_start_period() -> None:
    check = re.search(r"^HEALTHCHECK (.*?)\n(?:\S|$)", runtime_stage(), re.MULTILINE | re.DOTALL)
    assert check is not None
    text = check.group(1)
    assert re.search(r"--start-period=\d+s", text)
    assert "/health'" in text and "/health/ready" not in text


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything out, then what the build needs back in
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        part.rstrip("/")
        for line in re.findall(r"^COPY (?!--from)(.*) \S+$", DOCKERFILE, re.MULTILINE)
        for part in line.split()
    }
    assert copied <= allowed, copied - allowed
    for local in (".venv", ".git", "payment_service.db", ".paysvc-jwt-secret", "tests"):
        assert local not in allowed
