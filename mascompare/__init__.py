"""mascompare: run one task on one model under several multi-agent methods and compare them."""

from mascompare import config as _config  # noqa: F401  registers the OmegaConf resolvers that conf/ uses

__version__ = "0.1.0"
