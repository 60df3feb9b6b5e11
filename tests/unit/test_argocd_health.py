"""docs/argocd-health.lua, the Argo CD health check, run with Lua 5.4 against ShardedDataset objects.

The fixtures in tests/fixtures/status/ are whole objects (metadata, spec, status). EXPECTED pins the health
status of each; the expected message follows from the object's own conditions, so fixtures captured from real
runs can replace the hand-made ones without touching the messages here.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "argocd-health.lua"
FIXTURES = REPO / "tests" / "fixtures" / "status"

EXPECTED = {
    "no-status.yaml": "Progressing",
    "converting.yaml": "Progressing",
    "stale-generation.yaml": "Progressing",
    "ready.yaml": "Healthy",
    "stalled-missing-source.yaml": "Degraded",
    "failed-conversion.yaml": "Degraded",
}


@pytest.fixture(scope="module")
def lua() -> str:
    path = shutil.which("lua5.4") or ("/usr/bin/lua5.4" if os.access("/usr/bin/lua5.4", os.X_OK) else None)
    if path is None:
        if os.environ.get("SDS_REQUIRE_LUA") == "1":
            pytest.fail("lua5.4 not found (SDS_REQUIRE_LUA=1); apt-get install lua5.4")
        pytest.skip("lua5.4 not found")
    return path


def to_lua(value: Any) -> str:
    """A Lua literal for a YAML/JSON value (None becomes nil; maps drop nil entries, as in Argo CD)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime | dt.date):
        return to_lua(value.isoformat())
    if isinstance(value, str):
        out = []
        for byte in value.encode():
            ch = chr(byte)
            out.append(ch if 32 <= byte < 127 and ch not in '"\\' else f"\\{byte:03d}")
        return '"' + "".join(out) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        items = [f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def health(lua: str, obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    harness = tmp_path / "harness.lua"
    harness.write_text(
        f"obj = {to_lua(obj)}\n"
        f"local hs = dofile({to_lua(str(SCRIPT))})\n"
        'io.write(tostring(hs.status), "\\n", tostring(hs.message))\n'
    )
    proc = subprocess.run([lua, str(harness)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    status, _, message = proc.stdout.partition("\n")
    return status, message


def expected_message(obj: dict[str, Any], status: str) -> str | None:
    """What the message must be, from the object itself (None: only the health status is checked)."""
    st = obj.get("status")
    if not st:
        return "Waiting for status"
    conditions = {c["type"]: c for c in st.get("conditions") or []}
    generation = obj["metadata"].get("generation")
    if generation is not None and st.get("observedGeneration", -1) < generation:
        return f"Waiting for the operator to observe generation {generation}"
    condition = {"Degraded": conditions.get("Stalled"), "Healthy": conditions.get("Ready")}.get(
        status, conditions.get("Ready")
    )
    if condition is None:
        return None
    return condition.get("message") or condition.get("reason")


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(lua: str, tmp_path: Path, name: str) -> None:
    obj = yaml.safe_load((FIXTURES / name).read_text())
    status, message = health(lua, obj, tmp_path)
    assert status == EXPECTED[name], message
    want = expected_message(obj, status)
    if want is not None:
        assert message == want


def _obj(conditions: list[dict[str, Any]] | None, generation: int = 1, observed: int | None = 1) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Converting"}
    if observed is not None:
        status["observedGeneration"] = observed
    if conditions is not None:
        status["conditions"] = conditions
    return {"metadata": {"name": "d", "namespace": "ns", "generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("obj", "want"),
    [
        (_obj(None), ("Progressing", "Waiting for the Ready condition")),
        (_obj([], observed=None), ("Progressing", "Waiting for the operator to observe generation 1")),
        (_obj([{"type": "Ready", "status": "Unknown"}]), ("Progressing", "Waiting for the Ready condition")),
        (_obj([{"type": "Ready", "status": "False", "reason": "Pending", "message": ""}]), ("Progressing", "Pending")),
        (
            _obj(
                [{"type": "Ready", "status": "False"}, {"type": "Stalled", "status": "True", "reason": "InvalidSpec"}]
            ),
            ("Degraded", "InvalidSpec"),
        ),
        (
            _obj([{"type": "Ready", "status": "True", "message": "done"}, {"type": "Stalled", "status": "False"}]),
            ("Healthy", "done"),
        ),
        (  # a new version builds while the published one serves: a rollout in progress
            _obj(
                [
                    {"type": "Ready", "status": "True", "reason": "Serving", "message": "serving g1"},
                    {"type": "Reconciling", "status": "True", "message": "converting g2"},
                ]
            ),
            ("Progressing", "converting g2"),
        ),
        (  # that build failed: degraded, although the published version still serves
            _obj(
                [
                    {"type": "Ready", "status": "True", "reason": "Serving", "message": "serving g1"},
                    {"type": "Reconciling", "status": "False"},
                    {"type": "Stalled", "status": "True", "message": "g2 failed"},
                ]
            ),
            ("Degraded", "g2 failed"),
        ),
        (
            _obj([{"type": "Ready", "status": "True", "message": "done"}], generation=5, observed=4),
            ("Progressing", "Waiting for the operator to observe generation 5"),
        ),
        (
            {
                "metadata": {"name": "d"},
                "status": {"conditions": [{"type": "Ready", "status": "True", "message": "é"}]},
            },
            ("Healthy", "é"),
        ),
    ],
)
def test_rules(lua: str, tmp_path: Path, obj: dict[str, Any], want: tuple[str, str]) -> None:
    assert health(lua, obj, tmp_path) == want
