"""What pyproject.toml cannot say: conf/ stays at the top of the repository, where users look for it, and
ships inside the package as `mascompare.conf` (mapped at build time, never copied in the tree); and a wheel
records the commit it was built from, since an installed package has no checkout to ask."""

import json
import shutil
import subprocess
from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
# conf/'s sub-folders are listed as packages too, so that setuptools ships their YAML as package data
CONF_PACKAGES = ["mascompare.conf", *(f"mascompare.conf.{name}" for name in
                                      find_namespace_packages(where=str(ROOT / "conf"), exclude=["*__pycache__*"]))]
BUILD_INFO = "mascompare/build_info.json"  # read back by mascompare/environment.py


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def build_info() -> dict:
    """HEAD and whether tracked files differ from it, when this folder is the root of a git checkout (not
    merely inside some other repository); else what an sdist recorded when it was made."""
    top = git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == ROOT:
        sha, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
        if sha and status is not None:
            return {"sha": sha, "dirty": bool(status)}
    recorded = ROOT / BUILD_INFO
    return json.loads(recorded.read_text()) if recorded.is_file() else {"sha": None, "dirty": None}


def write_build_info(base: str) -> None:
    target = Path(base, BUILD_INFO)
    target.unlink(missing_ok=True)  # an sdist's release tree may hard-link it to the source's copy
    target.write_text(json.dumps(build_info()) + "\n")


class BuildPy(build_py):
    """Starts from an empty package folder, so that modules deleted since the last build (still in a
    developer's build/) do not reach the wheel, and adds the build record. An editable install does
    neither: it runs the checkout itself, whose git state the run records."""

    def run(self):
        staged = Path(self.build_lib, "mascompare").resolve()
        if not self.editable_mode and staged != ROOT / "mascompare":
            shutil.rmtree(staged, ignore_errors=True)
        super().run()
        if not self.editable_mode:
            write_build_info(self.build_lib)


class Sdist(sdist):
    """An sdist carries the build record, so that a wheel built from it (no .git there) still names the commit."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        write_build_info(base_dir)


setup(
    packages=[*find_packages(include=["mascompare", "mascompare.*"]), *CONF_PACKAGES],
    package_dir={"mascompare.conf": "conf"},
    package_data={**{name: ["*.yaml"] for name in CONF_PACKAGES},
                  "mascompare.view": ["*.html", "*.css", "*.js"]},  # the viewer's page
    cmdclass={"build_py": BuildPy, "sdist": Sdist},
)
