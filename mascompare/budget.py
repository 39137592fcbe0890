"""run.max_cost_usd: before each batch (or streamed sample), stop if what is spent plus what the next samples may
cost would pass the cap.

What a sample may cost is its dry-run upper bound (every request writing generation.max_new_tokens, prompts
counted locally, on the graph the run evaluates; dry_run.sample_bounds), or, where local counts run below the
server's, the mean cost per attempt so far: the larger of the two, so that the cap is not passed.
"""

from __future__ import annotations

from mascompare.store import plural


class Budget:
    def __init__(self, cap: float, bounds: dict[str, float], attempts: list[float], calibration: float):
        """`bounds`: each sample id's upper bound; `attempts`: the cost of every attempt of every sample so far (a
        failed attempt was billed too); `calibration`: what the method's calibration cost this run."""
        self.cap, self.bounds = cap, bounds
        self.attempts = list(attempts)
        self.spent = sum(self.attempts) + calibration

    def add(self, cost: float) -> None:
        self.spent += cost
        self.attempts.append(cost)

    def next_cost(self, samples) -> float:
        bound = sum(self.bounds[s.id] for s in samples)
        observed = sum(self.attempts) / len(self.attempts) * len(samples) if self.attempts else 0.0
        return max(bound, observed)

    def stop_reason(self, samples) -> str | None:
        expected = self.next_cost(samples)
        if self.spent + expected <= self.cap:
            return None
        return (f"budget: ${self.spent:.4f} spent of run.max_cost_usd=${self.cap:.4f}, and the next "
                f"{plural(len(samples), 'sample')} may cost up to ${expected:.4f}; raise run.max_cost_usd and run the "
                "same command again to resume")
