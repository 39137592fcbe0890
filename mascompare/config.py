"""Where the configs live (conf/), and the OmegaConf resolvers they use; importing this module registers them."""

from __future__ import annotations

from pathlib import Path, PurePath

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def model_label(path, default: str) -> str:
    """A model preset's name, unless model.path points elsewhere: then the path's last part names it."""
    return default if path in (None, "") else PurePath(str(path).rstrip("/")).name


OmegaConf.register_new_resolver("mascompare_model_label", model_label, replace=True)
