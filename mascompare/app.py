"""The Hydra application: compose the config, run it, return the primary metric.

`mascompare run ...` hands its arguments to `main` in-process, so multirun, sweepers and
launchers work as with any Hydra app; sweepers optimise the returned accuracy.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mascompare.backends import KeptBackend
from mascompare.config import CONF_DIR
from mascompare.errors import UserError
from mascompare.runner import default_run_dir, execute

# hydra.run.dir is computed from the run's own config, so the same command resumes in place.
OmegaConf.register_new_resolver("mascompare_run_dir", lambda *, _root_: str(default_run_dir(_root_)), replace=True)

# The jobs of a sweep that run in this process share one backend while its configs stay equal.
SWEEP_BACKEND = KeptBackend()


def compose_config(*overrides: str) -> DictConfig:
    """The config `mascompare run <overrides>` would use, without running it (scripts, benchmarks, tests)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    try:
        info = execute(cfg, hydra_cfg.runtime.output_dir,
                       kept=SWEEP_BACKEND if hydra_cfg.mode == RunMode.MULTIRUN else None)
    except UserError as exc:
        if hydra_cfg.mode == RunMode.RUN:
            raise StopRun(exc) from exc
        raise  # in a sweep Hydra records the failed job and names its overrides
    if info["status"] == "dry_run":
        _remove_empty_dirs(Path(hydra_cfg.runtime.output_dir), Path(cfg.run.output_root))
    return info["summary"].get(f"accuracy_{cfg.run.primary_metric}")


def _remove_empty_dirs(directory: Path, root: Path) -> None:
    """A dry run leaves no trace: Hydra made its output directory (and parents) before we knew."""
    while root.resolve() in directory.resolve().parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


class StopRun(SystemExit):
    """Carries a UserError past Hydra's job wrapper (which reports any Exception with its own banner)."""

    def __init__(self, error: UserError):
        super().__init__(2)
        self.error = error
