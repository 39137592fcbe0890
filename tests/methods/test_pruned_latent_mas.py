"""pruned_latent_mas on tiny random-weight models (tied and untied embeddings), and once on the embedded model."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf
from recording_backend import ThoughtRecorder
from typer.testing import CliRunner

from conftest import decoding, make_task
from conftest import make_method as build_method
from mascompare import runner as run_module
from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends.hf import HFBackend
from mascompare.cli import app
from mascompare.errors import UserError
from mascompare.methods import method_settings
from mascompare.methods.agent_graph import Graph
from mascompare.methods.masks import MASKS_FILE, MASKS_PICTURE
from mascompare.methods.pruned_latent_mas import PrunedLatentMAS

AGENTS = ["algebraist", "calculator", "programmer", "inspector"]


def compose_cfg(*overrides):
    return compose_config("method=pruned_latent_mas", "task=arith", *overrides)


TASK = make_task("arith", "task.seed=3", "task.size_per_level=4", "task.limit=8")
SAMPLES = TASK.samples()


def make_method(backend, *overrides, task=TASK, max_new_tokens=6, accountant=None, cfg=None):
    settings = cfg if cfg is not None else method_settings(compose_cfg("method.latent_steps=2", *overrides).method)
    return PrunedLatentMAS(settings, backend, task, decoding(max_new_tokens=max_new_tokens), accountant or Accountant())


def prepared(method, samples=SAMPLES):
    """The method with its graph decided, as the runner prepares it before any sample runs."""
    method.prepare(None, samples, resume=True)
    return method


def graph_with(n, edges) -> Graph:
    spatial = np.zeros((n, n), dtype=int)
    for i, j in edges:
        spatial[i, j] = 1
    return Graph(spatial, np.zeros_like(spatial))


def third_agents_thoughts(backend, edges, first_instruction):
    """The latent inputs of agent 2 (programmer) when agent 0's instruction is `first_instruction`."""
    recorder = ThoughtRecorder(backend)
    method = make_method(recorder, f"method.agents.0.instruction='{first_instruction}'")
    method.execute(SAMPLES[:2], [(graph_with(4, edges),)] * 2, [s.id for s in SAMPLES[:2]], "eval")
    return np.stack([t.numpy() for t in recorder.thoughts[4:6]])  # 2 latent steps per agent, agents 0..3


def test_a_pruned_edge_carries_no_influence_and_a_kept_one_does(either_tiny_backend):
    algebra, table = "Solve it with algebra.", "Work it out with a long and careful table of numbers."
    # agent 2 reads agent 1, which reads nobody; agent 0 is read by agent 3 only. (Influence is transitive
    # in latent form: had agent 1 read agent 0, agent 1's cache entries would carry it on to agent 2.)
    without = [(0, 3), (1, 2), (2, 3)]
    a = third_agents_thoughts(either_tiny_backend, without, algebra)
    b = third_agents_thoughts(either_tiny_backend, without, table)
    assert np.allclose(a, b, atol=1e-4), "agent 2 does not see agent 0: its thoughts must not change"
    kept = without + [(0, 2)]
    a = third_agents_thoughts(either_tiny_backend, kept, algebra)
    b = third_agents_thoughts(either_tiny_backend, kept, table)
    assert not np.allclose(a, b, atol=1e-2), "with the edge kept, agent 0's prompt reaches agent 2"


def latent_mas_agents_cfg(*overrides):
    """pruned_latent_mas configured with latent_mas's sequential agents, roles and system message."""
    latent = compose_config("method=latent_mas", "task=arith").method
    cfg = OmegaConf.to_container(compose_cfg("method.prune_rate=0", "method.topology=full", *overrides).method,
                                 resolve=True)
    roles = OmegaConf.to_container(latent.roles.sequential)
    cfg.update(agents=roles[:-1], decider=roles[-1], system=latent.roles.system)
    return PrunedLatentMAS.Settings.of(cfg, "method")


def test_prune_rate_0_with_latent_mas_agents_equals_latent_mas_sequential(either_tiny_backend):
    backend = either_tiny_backend
    ours, theirs = Accountant(), Accountant()
    pruned = prepared(make_method(backend, cfg=latent_mas_agents_cfg("method.latent_steps=3"), accountant=ours))
    reference = build_method("latent_mas", backend, TASK, "method.latent_steps=3", max_new_tokens=6, accountant=theirs)
    mine, expected = pruned.run(SAMPLES), reference.run(SAMPLES)
    assert [o.final_text for o in mine] == [o.final_text for o in expected]
    assert [o.transcript for o in mine] == [o.transcript for o in expected]
    assert len({o.final_text for o in mine}) > 1  # the rows really differ
    for sample in SAMPLES:
        strip = [{k: v for k, v in r.to_json().items() if k != "wall_time_s"} for r in ours.take(sample.id)]
        assert strip == [{k: v for k, v in r.to_json().items() if k != "wall_time_s"} for r in theirs.take(sample.id)]


@pytest.mark.parametrize("final_sees", ["all", "learned"])
def test_batch_of_8_gives_the_same_texts_as_one_at_a_time(either_tiny_backend, final_sees):
    method = make_method(either_tiny_backend, f"method.final_sees={final_sees}")
    n = 5 if final_sees == "learned" else 4
    method.graph = graph_with(n, [(0, 2), (1, 3), (2, 3)] + ([(1, 4), (3, 4)] if n == 5 else []))
    batched = [o.final_text for o in method.run(SAMPLES)]
    single = [method.run([s])[0].final_text for s in SAMPLES]
    assert batched == single
    assert len(set(batched)) > 1


def test_sliding_window_batches_give_the_same_texts_as_one_at_a_time(tiny_sliding_gemma3, smollm2_tokenizer):
    backend = HFBackend.from_loaded(tiny_sliding_gemma3, smollm2_tokenizer, "sliding", "cpu")
    method = prepared(make_method(backend, "method.prune_rate=0"))
    assert method.padding_could_pass_window(SAMPLES)  # windows reach back across padding between segments
    batched = [o.final_text for o in method.run(SAMPLES)]
    assert batched == [method.run([s])[0].final_text for s in SAMPLES]
    assert len(set(batched)) > 1


def final_texts_with_first_instruction(backend, instruction, graphs):
    method = make_method(backend, "method.final_sees=learned", f"method.agents.0.instruction='{instruction}'",
                         max_new_tokens=8)
    batch = SAMPLES[:len(graphs)]
    prompt_length = len(method.prompts(method.agents[0], batch[:1])[0])
    outputs = method.execute(batch, [(graph,) for graph in graphs], [s.id for s in batch], "calibration")
    return [o.final_text for o in outputs], prompt_length


def test_each_row_of_a_calibration_batch_attends_through_its_own_graph(either_tiny_backend):
    """Row 0's graph leaves agent 0 out; row 1's needs it, so agent 0 runs for the whole batch. Changing
    agent 0's prompt (same length, so every position stays the same) must not reach row 0's final agent,
    neither through its prompt nor while it decodes; it does reach row 1's."""
    graphs = [graph_with(5, [(1, 4)]), graph_with(5, [(0, 4), (1, 4)])]
    a, length_a = final_texts_with_first_instruction(either_tiny_backend, "Solve it with algebra.", graphs)
    b, length_b = final_texts_with_first_instruction(either_tiny_backend, "Zebra zebra zebra zebra.", graphs)
    assert length_a == length_b
    assert a[0] == b[0] and a[1] != b[1]


def test_an_agent_nobody_may_see_is_not_run_and_savings_are_recorded(tiny_backend):
    accountant = Accountant()
    method = make_method(tiny_backend, "method.final_sees=learned", "method.latent_steps=3",
                         accountant=accountant)
    # agent 0 -> 2 -> final; agent 1 feeds only agent 3, which nobody sees: neither 3 nor 1 runs
    method.graph = graph_with(5, [(0, 2), (1, 3), (2, 4)])
    method.run(SAMPLES[:2])
    records = accountant.take(SAMPLES[0].id)
    assert [r.agent for r in records] == ["algebraist", "programmer", "decider"]
    prompt = {r.agent: r.input_tokens for r in records}
    assert [r.kv_positions_received for r in records] == [
        0, prompt["algebraist"] + 3, prompt["programmer"] + 3]  # each sees exactly its source's segment
    assert [r.kv_received_from for r in records] == [
        {}, {"algebraist": prompt["algebraist"] + 3}, {"programmer": prompt["programmer"] + 3}]
    assert [r.forward_passes for r in records[:2]] == [4, 4] and records[-1].forward_passes == records[-1].output_tokens

    full = Accountant()
    prepared(make_method(tiny_backend, "method.prune_rate=0", "method.latent_steps=3", accountant=full)).run(SAMPLES[:2])
    everyone = full.take(SAMPLES[0].id)
    assert len(everyone) == 5 and sum(r.kv_positions_received for r in everyone) > sum(
        r.kv_positions_received for r in records)


def test_calibration_drives_a_harmful_edge_down_over_real_latent_runs(tiny_backend, tmp_path):
    """A scripted utility: a graph is right exactly when it lacks the edge calculator -> programmer.
    Every sampled graph really runs (latent agents, final decoding); only the scoring is scripted."""
    task = make_task("arith", "task.seed=0", "task.levels=[1]", "task.limit=4")
    accountant = Accountant()
    method = make_method(tiny_backend, "method.latent_steps=1", "method.calibration.iterations=20",
                         "method.calibration.batch_size=8", "method.calibration.size=16", task=task, max_new_tokens=1,
                         accountant=accountant)
    harmful = (1, 2)
    real_execute, graphs_run = method.execute, []

    def scripted(samples, graphs, ids, phase):
        outputs = real_execute(samples, graphs, ids, phase)
        graphs_run.extend(graphs)
        for sample, (graph,), output in zip(samples, graphs, outputs):  # one round: one graph
            output.final_text = f"The answer is {sample.target if not graph.spatial[harmful] else 'wrong'}."
        return outputs

    method.execute = scripted
    method.prepare(tmp_path, task.samples(), resume=True)
    logits = method.edge_policy.scores("spatial")
    others = [logits[i, j] for i in range(4) for j in range(i + 1, 4) if (i, j) != harmful]
    assert logits[harmful] < min(others) and logits[harmful] < 0
    assert method.graph.spatial[harmful] == 0 and method.graph.spatial.sum() == 3  # top half of 6 edges
    cal = method.info["calibration"]
    assert len(graphs_run) == 160 and cal["usage"]["calls"] == 160 * 5  # every graph ran all 5 agents
    assert cal["usage"]["latent_steps"] == 160 * 4
    saved = json.loads((tmp_path / MASKS_FILE).read_text())
    assert saved["evaluated"] == method.graph.spatial.tolist() and (tmp_path / MASKS_PICTURE).is_file()

    # method.masks= reuses the learned logits without calibrating again
    again = make_method(tiny_backend, f"method.masks={tmp_path / MASKS_FILE}", task=task)
    again.prepare(None, task.samples(), resume=True)
    assert np.array_equal(again.graph.spatial, method.graph.spatial)
    assert again.info["calibration"]["reused_from"] == str(tmp_path / MASKS_FILE)
    other = make_method(tiny_backend, f"method.masks={tmp_path / MASKS_FILE}", "method.final_sees=learned", task=task)
    with pytest.raises(UserError, match="are for graph nodes"):
        other.prepare(None, task.samples(), resume=True)


def test_only_forward_edges_and_the_final_agent_make_the_starting_graph(tiny_backend):
    method = make_method(tiny_backend, "method.final_sees=learned")
    start = method.starting_mask()
    assert start.shape == (5, 5) and start.sum() == 6 + 4
    assert np.array_equal(start[:4, :4], np.triu(np.ones((4, 4), dtype=int), k=1)) and start[:4, 4].all()
    assert make_method(tiny_backend, "method.topology=chain").starting_mask().sum() == 3


@pytest.mark.parametrize("override, message", [
    ("method.rounds=2", "method.rounds must be 1"),
    ("method.final_sees=some", "method.final_sees must be one of all, learned"),
    ("method.latent_steps=-1", "method.latent_steps must be a non-negative integer"),
    ("method.realign=maybe", "method.realign must be true or false"),
    ("method.prune_rate=1", "method.prune_rate"),
])
def test_bad_config_is_refused_before_the_model_loads(override, message):
    with pytest.raises(UserError, match=message):
        method_settings(compose_cfg(override).method)


def test_a_backend_without_a_model_in_this_process_fails_before_any_work(tmp_path):
    with pytest.raises(UserError, match="Method 'pruned_latent_mas' thinks in latent space"):
        run_module.execute(compose_cfg("backend=openai", "backend.base_url=http://127.0.0.1:9/v1"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def cli_run(tmp_path, *args):
    result = CliRunner().invoke(app, ["run", "method=pruned_latent_mas", "task=arith", "run.progress=false",
                                      f"run.output_root={tmp_path}", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "arith" / "pruned_latent_mas").glob("*/*")
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return run_dir, rows, json.loads((run_dir / "run.json").read_text())


TINY_CALIBRATION = ["method.calibration.size=2", "method.calibration.iterations=1", "method.calibration.batch_size=2"]


def test_cli_run_reports_calibration_apart(tiny_model_dir, tmp_path):
    run_dir, rows, info = cli_run(tmp_path, "task.limit=2", f"model.path={tiny_model_dir}", "model.name=tiny",
                                  "generation.max_new_tokens=3", "method.latent_steps=2", *TINY_CALIBRATION)
    cal = info["method_info"]["calibration"]
    assert cal["performed"] and cal["usage"]["calls"] == 2 * 5 and (run_dir / MASKS_PICTURE).is_file()
    for row in rows:
        assert {a["phase"] for a in row["agents"]} == {"eval"} and row["usage"]["latent_steps"] == 4 * 2
        assert [a["agent"] for a in row["agents"]] == [*AGENTS, "decider"]


@pytest.mark.embedded
def test_smoke_on_the_embedded_model(tmp_path):
    run_dir, rows, info = cli_run(tmp_path, "task.limit=2", "generation.max_new_tokens=16", *TINY_CALIBRATION)
    assert len(rows) == 2 and all(r["error"] is None and r["final_text"].strip() for r in rows)
    assert all(r["usage"]["latent_steps"] == 40 and 1 <= r["usage"]["output_tokens"] <= 16 for r in rows)
    assert info["method_info"]["graph"]["edges_kept"] == 3 and (run_dir / MASKS_PICTURE).is_file()


def test_saved_masks_are_refused_where_the_run_would_evaluate_their_calibration_questions(tiny_backend, tmp_path):
    limited = make_task("arith", "task.seed=0", "task.levels=[1,2]", "task.limit=4")
    everything = make_task("arith", "task.seed=0", "task.levels=[1,2]")
    tail = ["method.calibration.split=tail", "method.calibration.size=2", "method.calibration.iterations=1",
            "method.calibration.batch_size=2"]
    make_method(tiny_backend, *tail, task=limited, max_new_tokens=1).prepare(tmp_path, limited.samples(), resume=True)
    reuse = make_method(tiny_backend, f"method.masks={tmp_path / MASKS_FILE}", task=everything)
    with pytest.raises(UserError, match="were calibrated on 2 of the questions this run evaluates"):
        reuse.prepare(None, everything.samples(), resume=True)
    resumed = make_method(tiny_backend, *tail, task=everything)  # task.limit raised, same run directory
    with pytest.raises(UserError, match="were calibrated on 2 of the questions this run evaluates"):
        resumed.prepare(tmp_path, everything.samples(), resume=True)


# --- prompt packs and the authors' learning rules --------------------------------------------------


def test_a_pack_gives_latent_agents_their_prompts_and_examples(tiny_backend, tmp_path):
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        "agents:\n"
        "  - {name: one, role: One, instruction: 'Think one way.', answers: false, system: 'Own system.',\n"
        "     examples: [{question: 'What is 1 + 1?', answer: 'It is 2.'}]}\n"
        "  - {name: two, role: Two, instruction: 'Think another way.', answers: false}\n"
        "decider: {name: last, role: Last, instruction: 'Answer.', answers: true}\n", encoding="utf-8")
    accountant = Accountant()
    method = prepared(make_method(tiny_backend, f"method.prompt_pack={pack}", "method.prune_rate=0",
                                  accountant=accountant), SAMPLES[:1])
    method.run(SAMPLES[:1])
    records = accountant.take(SAMPLES[0].id)
    assert [r.agent for r in records] == ["one", "two", "last"]
    first = records[0].messages
    assert first[0] == {"role": "system", "content": "Own system."}
    assert first[1]["content"] == ("Think one way.\n\nExample problem:\nWhat is 1 + 1?\n\nExample solution:\nIt is 2."
                                   f"\n\nProblem:\n{SAMPLES[0].question}")
    assert records[1].messages[0]["role"] == "user"  # the pack gives no shared system message
    assert method.run_info()["prompt_pack"]["source"] == str(pack)


def test_sampled_test_graphs_are_drawn_among_the_kept_edges_and_recorded(tiny_backend):
    accountant = Accountant()
    method = prepared(make_method(tiny_backend, "method.prune_rate=0", "method.test_graph=sampled",
                                  accountant=accountant))
    outputs = method.run(SAMPLES[:4])
    again = method.run(SAMPLES[2:4])
    assert [o.diagnostics for o in outputs[2:]] == [o.diagnostics for o in again]  # per question, not per batch
    kept = {(AGENTS[i], AGENTS[j]) for i, j in zip(*np.nonzero(method.graph.spatial))}
    for sample, output in zip(SAMPLES[:4], outputs):
        (round0,) = output.diagnostics["graph"]["rounds"]
        edges = {tuple(e) for e in round0["spatial"]}
        assert edges <= kept
        records = {r.agent: r for r in accountant.take(sample.id)}
        for name in AGENTS:  # each agent attended to the segments of exactly its drawn sources
            if name in records:
                assert set(records[name].kv_received_from) == {a for a, b in edges if b == name}
    assert len({json.dumps(o.diagnostics) for o in outputs}) > 1


def test_a_masks_file_with_a_missing_logit_on_an_edge_is_refused(tiny_backend, tmp_path):
    limited = make_task("arith", "task.seed=0", "task.levels=[1,2]", "task.limit=2")
    calibrate = ["method.calibration.split=tail", "method.calibration.size=2", "method.calibration.iterations=1",
                 "method.calibration.batch_size=2"]
    make_method(tiny_backend, *calibrate, task=limited, max_new_tokens=1).prepare(tmp_path, limited.samples(),
                                                                                 resume=True)
    masks = json.loads((tmp_path / MASKS_FILE).read_text())
    masks["logits"][0][1] = None  # agent 0 -> agent 1 is a potential edge
    (tmp_path / "damaged.json").write_text(json.dumps(masks))
    reuse = make_method(tiny_backend, f"method.masks={tmp_path / 'damaged.json'}", task=limited)
    with pytest.raises(UserError, match=r"^logits in the masks file .* must be a finite number for every potential "
                                        r"edge, got nan at row 0, column 1;"):
        reuse.prepare(None, limited.samples(), resume=True)
