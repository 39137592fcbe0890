"""OmegaConf resolvers that the configs in conf/ use; importing this module registers them."""

from __future__ import annotations

from pathlib import PurePath

from omegaconf import OmegaConf


def model_label(path, default: str) -> str:
    """A model preset's name, unless model.path points elsewhere: then the path's last part names it."""
    return default if path in (None, "") else PurePath(str(path).rstrip("/")).name


OmegaConf.register_new_resolver("mascompare_model_label", model_label, replace=True)
