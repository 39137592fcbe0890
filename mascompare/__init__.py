"""mascompare: run one task on one model under several multi-agent methods and compare them."""

__version__ = "0.1.0"
