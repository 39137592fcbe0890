"""Method registry and the method contract.

A method gets a batch of samples and returns one final text per sample plus a transcript;
every model call it makes is recorded with the accountant (with the messages it sent, why its
decoding ended and its seed). Methods never score. A method decodes with `self.gen`, which the
runner replaces for each of `run.repeats`, and seeds each sampled call with
`self.gen.call_seeds((sample id, agent, round))`.
Each method lives in one file, `mascompare/methods/<name>.py`, which defines `Method`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mascompare.registry import Registry

METHODS = Registry(
    "method",
    {
        "baseline": "mascompare.methods.baseline:Method",
        "text_mas": "mascompare.methods.text_mas:Method",
        "pruned_mas": "mascompare.methods.pruned_mas:Method",
        "latent_mas": "mascompare.methods.latent_mas:Method",
        "pruned_latent_mas": "mascompare.methods.pruned_latent_mas:Method",
    },
)


@dataclass
class Turn:
    agent: str
    role: str
    round: int
    text: str | None  # None when the agent thought in latent space and wrote nothing


@dataclass
class MethodOutput:
    final_text: str
    transcript: list[Turn] = field(default_factory=list)
    error: str | None = None  # set when this sample failed (e.g. a request that failed after retries)
    diagnostics: dict | None = None  # optional per-sample measurements a method records (e.g. latent norms)


def build_method(method_cfg, backend, task, gen, accountant):
    return METHODS.get(method_cfg.name)(method_cfg, backend, task, gen, accountant)


__all__ = ["METHODS", "MethodOutput", "Turn", "build_method"]
