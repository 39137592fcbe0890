"""Method registry: `method=<name>` resolves here; the contract is methods/base.py's `Method`."""

from __future__ import annotations

from mascompare.methods.base import Method, MethodOutput
from mascompare.records import Turn
from mascompare.registry import Registry

METHODS = Registry(
    "method", Method,
    {
        "baseline": "mascompare.methods.baseline:Baseline",
        "text_mas": "mascompare.methods.text_mas:TextMAS",
        "pruned_mas": "mascompare.methods.pruned_mas:PrunedMAS",
        "latent_mas": "mascompare.methods.latent_mas:LatentMAS",
        "pruned_latent_mas": "mascompare.methods.pruned_latent_mas:PrunedLatentMAS",
    },
)


def method_settings(node):
    """A composed `method` section as its method's typed settings (settings.validate does this for whole configs)."""
    return METHODS.get(node.name).Settings.of(node, "method")


__all__ = ["METHODS", "Method", "MethodOutput", "Turn", "method_settings"]
