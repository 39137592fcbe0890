"""Hierarchical latent_mas: the experts run side by side as extra rows, with the same results as in sequence."""

import pytest
from conftest import make_method, make_task
from mascompare.accounting import Accountant


class OneAfterAnother:
    """The real backend, made to refuse joining rows: the experts then run one after another."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def can_join_rows(self) -> bool:
        return False


class PassCounter(OneAfterAnother):
    """The real backend, counting the forward passes the experts make."""

    def __init__(self, backend):
        super().__init__(backend)
        self.passes = 0

    def can_join_rows(self) -> bool:
        return self.backend.can_join_rows()

    def prefill(self, *args, **kwargs):
        self.passes += 1
        return self.backend.prefill(*args, **kwargs)

    def step_embeds(self, *args, **kwargs):
        self.passes += 1
        return self.backend.step_embeds(*args, **kwargs)


@pytest.fixture(scope="module")
def task():
    return make_task("arith", "task.seed=5", "task.size_per_level=3", "task.limit=6")


def run(backend, task, steps):
    accountant = Accountant()
    samples = task.samples()
    outputs = make_method("latent_mas", backend, task, "method.structure=hierarchical", f"method.latent_steps={steps}",
                          "method.diagnostics=true", max_new_tokens=8, accountant=accountant).run(samples)
    records = [[(r.role, r.input_tokens, r.latent_steps, r.kv_positions_received, r.forward_passes, r.output_tokens)
                for r in accountant.take(s.id)] for s in samples]
    return outputs, records


@pytest.mark.parametrize("steps", [0, 3])
@pytest.mark.parametrize("fixture", ["tiny_backend", "tiny_tied_backend"])
def test_experts_side_by_side_equal_experts_one_after_another(request, task, fixture, steps):
    backend = request.getfixturevalue(fixture)
    assert backend.can_join_rows()
    together, together_records = run(backend, task, steps)
    in_turn, in_turn_records = run(OneAfterAnother(backend), task, steps)
    assert [o.final_text for o in together] == [o.final_text for o in in_turn]
    assert len({o.final_text for o in together}) > 1  # the rows really differ
    assert together_records == in_turn_records
    for a, b in zip(together, in_turn):
        for expert, notes in a.diagnostics.items():
            assert notes["latent_norms"] == pytest.approx(b.diagnostics[expert]["latent_norms"], abs=2e-4)


def test_experts_take_the_forward_passes_of_one(tiny_backend, task):
    counter = PassCounter(tiny_backend)
    run(counter, task, steps=4)
    assert counter.passes == (1 + 4) + 1  # the experts' prefill and latent steps, then the summarizer's prefill
