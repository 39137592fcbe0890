"""Where the configs live, and the OmegaConf resolvers they use; importing this module registers them.

The shipped configs are conf/ at the top of the repository. A wheel carries that folder inside the package
as `mascompare.conf` (setup.py maps it there at build time), and Hydra composes from it as a package; a
checkout (PYTHONPATH or an editable install) composes from conf/ itself. Users add presets, tasks and
experiments from folders of their own laid out like conf/ (`mascompare run --config-dir DIR`, or the
MASCOMPARE_CONFIG_DIR variable: folders separated by the OS path separator). Hydra looks at the shipped
configs first, so a file of a user's that bears a shipped config's name would be silently ignored: it is
refused instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib import resources
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from mascompare.errors import UserError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

USER_CONFIG_ENV = "MASCOMPARE_CONFIG_DIR"
PACKAGED_MODULE = f"{__package__}.conf"

_packaged = resources.files(__package__).joinpath("conf")
if _packaged.joinpath("config.yaml").is_file():  # an installed wheel
    SHIPPED: Traversable = _packaged
    HYDRA_CONFIG_PATH = f"pkg://{PACKAGED_MODULE}"
else:  # a checkout
    SHIPPED = Path(__file__).resolve().parent.parent / "conf"
    HYDRA_CONFIG_PATH = str(SHIPPED)


def hydra_compose_context() -> AbstractContextManager:
    """Hydra's compose API initialised on the shipped configs (the user's folders come in as overrides)."""
    from hydra import initialize_config_dir, initialize_config_module

    if HYDRA_CONFIG_PATH.startswith("pkg://"):
        return initialize_config_module(PACKAGED_MODULE, version_base="1.3")
    return initialize_config_dir(HYDRA_CONFIG_PATH, version_base="1.3")


def user_config_dirs() -> list[Path]:
    """The user's config folders named by MASCOMPARE_CONFIG_DIR (which `--config-dir` sets), checked."""
    dirs = [Path(text).expanduser().resolve() for text in os.environ.get(USER_CONFIG_ENV, "").split(os.pathsep)
            if text]
    for directory in dirs:
        if not directory.is_dir():
            raise UserError(f"The config folder {directory} does not exist; give a folder laid out like the "
                            "shipped configs, e.g. one holding task/mytask.yaml.")
        for file in sorted(directory.rglob("*.yaml")):
            name = file.relative_to(directory).as_posix()
            if _find_in(SHIPPED, name) is not None:
                raise UserError(f"{file} has the name of a shipped config ({name}), which Hydra would use "
                                f"instead; rename it, e.g. to {name.removesuffix('.yaml')}_mine.yaml, and "
                                "choose it by that name.")
    return dirs


@contextmanager
def using_config_dirs(dirs: list[Path] | None) -> Iterator[None]:
    """MASCOMPARE_CONFIG_DIR set to these folders while a command runs (and so in the processes it starts),
    then restored; None leaves it as the environment has it."""
    if dirs is None:
        yield
        return
    saved = os.environ.get(USER_CONFIG_ENV)
    os.environ[USER_CONFIG_ENV] = os.pathsep.join(map(str, dirs))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(USER_CONFIG_ENV, None)
        else:
            os.environ[USER_CONFIG_ENV] = saved


def config_sources() -> list[Traversable]:
    """Where configs are found, in Hydra's order: the shipped ones, then the user's folders."""
    return [SHIPPED, *user_config_dirs()]


def search_path_overrides() -> list[str]:
    """The Hydra override that adds the user's folders to the config search path ([] when there are none)."""
    dirs = user_config_dirs()
    if not dirs:
        return []
    quoted = ",".join("'file://" + str(d).replace("'", "\\'") + "'" for d in dirs)
    return [f"hydra.searchpath=[{quoted}]"]


def find_config(name: str) -> Traversable | None:
    """A config file by its path under a config folder (e.g. model/qwen3-8b.yaml), wherever Hydra would find it."""
    for source in config_sources():
        found = _find_in(source, name)
        if found is not None:
            return found
    return None


def group_options(group: str) -> dict[str, Traversable]:
    """A config group's choices (the file names without .yaml) and their files, sorted by name."""
    options: dict[str, Traversable] = {}
    for source in config_sources():
        folder = _find_in(source, group, folder=True)
        for entry in folder.iterdir() if folder is not None else ():
            if entry.is_file() and entry.name.endswith(".yaml"):
                options.setdefault(entry.name.removesuffix(".yaml"), entry)
    return dict(sorted(options.items()))


def _find_in(source: Traversable, name: str, folder: bool = False) -> Traversable | None:
    entry = source.joinpath(*PurePath(name).parts)
    return entry if (entry.is_dir() if folder else entry.is_file()) else None


def model_label(path, default: str) -> str:
    """A model preset's name, unless model.path points elsewhere: then the path's last part names it."""
    return default if path in (None, "") else PurePath(str(path).rstrip("/")).name


OmegaConf.register_new_resolver("mascompare_model_label", model_label, replace=True)
