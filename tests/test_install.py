"""The package as users get it: a wheel built from a clean copy of this checkout, installed outside it.

The copy is HEAD cloned, with the working tree's version of every tracked file laid over it: untracked
folders (a developer's stale build/) stay out. The wheel goes into a venv of its own whose only link to the
project's venv is a path to its site-packages (torch, transformers, hydra ...), so nothing of mascompare can
come from the checkout or from the project venv's editable install; every command runs outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from mascompare import __version__

ROOT = Path(__file__).resolve().parents[1]


def sh(*args, cwd: Path | None = None) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def git(*args: str, cwd: Path = ROOT) -> str:
    return sh("git", *args, cwd=cwd)


def tracked(cwd: Path) -> set[str]:
    return set(filter(None, git("ls-files", "-z", cwd=cwd).split("\0")))


def clean_copy(dest: Path) -> dict:
    """HEAD with the working tree's tracked files laid over it; returns what the wheel should record."""
    head = git("rev-parse", "HEAD").strip()
    git("clone", "-q", "--shared", "--no-checkout", str(ROOT), str(dest))
    git("checkout", "-q", "--detach", head, cwd=dest)
    mine = tracked(ROOT)
    for path in tracked(dest) - mine:  # removed from the index here
        (dest / path).unlink()
    for path in mine:
        if (ROOT / path).is_file():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, dest / path)
        else:  # deleted in the working tree
            (dest / path).unlink(missing_ok=True)
    git("add", "-A", cwd=dest)
    return {"sha": head, "dirty": bool(git("status", "--porcelain", "--untracked-files=no", cwd=dest).strip()),
            "from": "build"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's bin folder, the commit record the wheel should carry, a folder outside the checkout)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("builds the wheel from a git checkout")
    base = tmp_path_factory.mktemp("install")
    expected = clean_copy(base / "src")
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
       "-w", base / "dist", base / "src")
    (wheel,) = (base / "dist").glob("mascompare-*.whl")
    venv = base / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    site = Path(sh(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    project_paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "project_venv.pth").write_text("".join(f"{p}\n" for p in project_paths))
    sh(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", "--no-index",
       wheel)
    outside = base / "elsewhere"
    outside.mkdir()
    return venv / "bin", expected, outside


def run_installed(installed, *args: str) -> subprocess.CompletedProcess:
    bin_dir, _, outside = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MASCOMPARE_CONFIG_DIR")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200", HF_HUB_OFFLINE="1")
    result = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=outside, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_the_package_and_its_configs_come_from_the_install(installed):
    probe = ("import json, mascompare, mascompare.config as c, mascompare.accounting as a; "
             "print(json.dumps([mascompare.__file__, str(c.SHIPPED), c.HYDRA_CONFIG_PATH, str(a.PRICES_FILE)]))")
    package, shipped, hydra_path, prices = json.loads(run_installed(installed, "python", "-c", probe).stdout)
    venv = installed[0].parent
    assert Path(package).is_relative_to(venv) and Path(shipped) == Path(package).parent / "conf"
    assert hydra_path == "pkg://mascompare.conf" and Path(prices) == Path(shipped) / "prices.yaml"
    assert not Path(package).is_relative_to(ROOT)


def test_list_shows_the_shipped_configs_and_a_users_own(installed, tmp_path):
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "arith_easy.yaml").write_text(
        "# arith_easy: single-digit sums only.\ndefaults:\n  - arith\n  - _self_\nlevels: [1]\n")
    out = run_installed(installed, "mascompare", "list", "--config-dir", str(tmp_path)).stdout
    assert f"configs: {installed[0].parent}" in out and f"; yours: {tmp_path}" in out
    for name in ("baseline (default)", "gsm8k", "smollm2-135m (default)", "hf (default)", "smoke"):
        assert name in out
    assert "arith_easy (yours) │ arith_easy: single-digit sums only." in out


def test_a_dry_run_and_a_one_sample_run_from_the_install(installed, tiny_model_dir, tmp_path):
    common = ["method=baseline", "task=arith", "task.limit=1", f"model.path={tiny_model_dir}", "model.name=tiny",
              "generation.max_new_tokens=4", "run.progress=false", f"run.output_root={tmp_path}"]
    dry = run_installed(installed, "mascompare", "run", "--dry-run", *common)
    assert "dry run · baseline · arith · tiny" in dry.stdout and not any(tmp_path.iterdir())

    run_installed(installed, "mascompare", "run", *common)
    (run_json,) = tmp_path.glob("arith/baseline/tiny/*/run.json")
    info = json.loads(run_json.read_text())
    assert info["status"] == "finished" and info["summary"]["n"] == 1
    env = info["environment"]
    assert env["git"] == installed[1]  # the commit the wheel was built from, not any checkout's state
    assert env["packages"]["mascompare"] == __version__
    hydra = yaml.safe_load((run_json.parent / ".hydra" / "hydra.yaml").read_text())["hydra"]
    main = [s for s in hydra["runtime"]["config_sources"] if s["provider"] == "main"]
    assert main == [{"path": "mascompare.conf", "schema": "pkg", "provider": "main"}]
