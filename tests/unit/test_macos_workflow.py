"""The macOS workflow (.github/workflows/macos.yml) and the runner's host data.

The workflow runs on GitHub's macOS runners only; here its host data is validated
with the schema, and its steps are read for what the README says it proves.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import yaml

from tasks import config

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "macos.yml"
GROUP_DATA = [ROOT / "group_data", ROOT / ".github" / "macos" / "group_data"]


def load(monkeypatch, **env) -> config.KittyConfig:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    data: dict = {}
    for folder in GROUP_DATA:
        names = runpy.run_path(str(folder / "all.py"))
        keys = names.get("__all__") or [k for k in names if k.startswith("kitty_")]
        data.update({k: names[k] for k in keys})
    return config.load(data)


@pytest.mark.parametrize(("backend", "layers"), [("metal", 99), ("cpu", 0)])
def test_the_runners_host_data_is_valid_and_a_cpu_build_asks_for_no_gpu_layers(monkeypatch, backend, layers):
    cfg = load(monkeypatch, KITTY_CI_BACKEND=backend)
    assert cfg.llamacpp.backend == backend
    assert {s.n_gpu_layers for s in cfg.servers.values()} == {layers}
    metal_env = {"GGML_METAL_NO_RESIDENCY": "1"} if backend == "metal" else {}
    assert all(dict(s.env) == metal_env for s in cfg.servers.values())
    assert cfg.paths.service_user and cfg.launchd.kind == "daemon" and not cfg.stack.enabled


def test_the_tiny_model_is_pinned_by_commit_and_sha256(monkeypatch):
    cfg = load(monkeypatch)
    (model,) = cfg.models.values()
    assert len(model.revision) == 40
    (file,) = model.files
    assert file.sha256 and len(file.sha256) == 64 and file.size


def test_the_workflow_runs_every_step_the_readme_names():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["converge"]["steps"]
    runs = [step.get("run", "") for step in steps]
    converges = [r for r in runs if ".github/macos/converge.py" in r]
    assert converges == [
        ".venv/bin/python .github/macos/converge.py deploy.py",
        ".venv/bin/python .github/macos/converge.py deploy.py --no-change",
        ".venv/bin/python .github/macos/converge.py deploy.py --restarted summary --kept q4",
        ".venv/bin/python .github/macos/converge.py stop.py --stopped q4 summary",
        ".venv/bin/python .github/macos/converge.py deploy.py",
    ]
    assert any("tests/host" in r for r in runs)
    # Every action pinned by commit; no credentials left in the checkout.
    for step in steps:
        if "uses" in step:
            assert len(step["uses"].split("@")[1]) == 40, step["uses"]
    assert steps[0]["with"]["persist-credentials"] is False
    assert workflow["permissions"] == {"contents": "read"}
