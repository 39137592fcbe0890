"""Dry runs and budgets on a local model: counts without calling the model, and a cap that stops cleanly."""

import json

import pytest
from typer.testing import CliRunner

from mascompare.app import compose_config
from mascompare.cli import app
from mascompare.dry_run import DryRunReport
from mascompare.errors import UserError
from mascompare.runner import execute


def tiny(tiny_model_dir, root, *extra):
    return ["task=arith", f"model.path={tiny_model_dir}", "model.name=tiny", "generation.max_new_tokens=6",
            "run.progress=false", f"run.output_root={root}", *extra]


def test_dry_run_counts_exactly_what_the_method_would_send(tiny_model_dir, tmp_path, smollm2_tokenizer):
    result = CliRunner().invoke(app, ["run", "--dry-run", *tiny(tiny_model_dir, tmp_path, "method=baseline",
                                                                 "task.limit=3")])
    assert result.exit_code == 0, result.output
    assert not any(tmp_path.iterdir())  # nothing written, not even an empty run directory
    cfg = compose_config(*tiny(tiny_model_dir, tmp_path, "method=baseline", "task.limit=3", "run.dry_run=true"))
    report = execute(cfg, tmp_path / "run")
    from mascompare.methods import method_settings
    from mascompare.methods.baseline import Baseline
    from mascompare.tasks import build_task, task_settings

    task = build_task(task_settings(cfg.task))
    method = Baseline(method_settings(cfg.method), None, task, None, None)
    expected = sum(len(smollm2_tokenizer.apply_chat_template(method.prompt(s.question), add_generation_prompt=True,
                                                             tokenize=True, return_dict=True)["input_ids"])
                   for s in task.samples())
    assert isinstance(report, DryRunReport) and report.status == "dry_run"
    assert report.evaluation["calls"] == 3 and report.evaluation["input_tokens"] == expected
    assert report.evaluation["output_tokens"] == 3 * 6 and report.cost_usd_at_most is None
    assert (report.samples_to_run, report.samples_done, report.calibration) == (3, 0, None)
    assert report.token_counts == "tokenizer"
    assert not (tmp_path / "run").exists()


def test_dry_run_of_text_mas_counts_every_agent_and_prices_them(tiny_model_dir, tmp_path):
    cfg = compose_config(*tiny(tiny_model_dir, tmp_path, "method=text_mas", "task.limit=5", "run.dry_run=true",
                               "+model.price={input: 1000000, output: 2000000}"))
    report = execute(cfg, tmp_path / "run")
    usage = report.evaluation
    assert usage["calls"] == 20 and usage["output_tokens"] == 20 * 6
    assert report.cost_usd_at_most == pytest.approx(usage["input_tokens"] * 1.0 + usage["output_tokens"] * 2.0)


def test_dry_run_skips_finished_samples(tiny_model_dir, tmp_path):
    execute(compose_config(*tiny(tiny_model_dir, tmp_path, "method=baseline", "task.limit=2")), tmp_path / "run")
    cfg = compose_config(*tiny(tiny_model_dir, tmp_path, "method=baseline", "task.limit=5", "run.dry_run=true"))
    report = execute(cfg, tmp_path / "run")
    assert (report.samples_to_run, report.samples_done, report.evaluation["calls"]) == (3, 2, 3)


def test_dry_run_of_latent_mas_says_why_it_has_nothing_to_count(tiny_model_dir, tmp_path):
    cfg = compose_config(*tiny(tiny_model_dir, tmp_path, "method=latent_mas", "task.limit=2", "run.dry_run=true"))
    with pytest.raises(UserError, match="^A dry run counts chat requests; method 'latent_mas' thinks in latent "
                                        "space inside the hf backend and sends none, so there is nothing to count.$"):
        execute(cfg, tmp_path / "run")


def test_a_budget_on_latent_mas_is_refused_before_anything_loads(tiny_model_dir, tmp_path):
    cfg = compose_config(*tiny(tiny_model_dir, tmp_path, "method=latent_mas", "task.limit=2", "run.max_cost_usd=1",
                               "+model.price={input: 1, output: 1}"))
    with pytest.raises(UserError, match="^run.max_cost_usd bounds each batch's cost by counting its chat requests "
                                        "first, and method 'latent_mas' thinks in latent space"):
        execute(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_budget_needs_a_known_price(tiny_model_dir, tmp_path):
    cfg = compose_config(*tiny(tiny_model_dir, tmp_path, "task.limit=2", "run.max_cost_usd=1"))
    with pytest.raises(UserError, match="price of model '.*' is unknown; add it to conf/prices.yaml"):
        execute(cfg, tmp_path / "run")


@pytest.mark.parametrize("cap", ["-1", "lots"])
def test_bad_budget_is_one_sentence(tiny_model_dir, tmp_path, cap):
    cfg = compose_config(*tiny(tiny_model_dir, tmp_path, f"run.max_cost_usd={cap}"))
    with pytest.raises(UserError, match="run.max_cost_usd must be a non-negative number"):
        execute(cfg, tmp_path / "run")


def test_budget_stops_before_the_cap_and_more_budget_resumes(tiny_model_dir, tmp_path):
    price = "+model.price={input: 10000, output: 10000}"  # a cent a token
    out = tmp_path / "run"
    info = execute(compose_config(*tiny(tiny_model_dir, tmp_path, price, "task.limit=6", "run.batch_size=2",
                                        "run.max_cost_usd=2.5")), out)
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert info.status == "stopped" and 0 < len(rows) < 6 and len(rows) % 2 == 0
    assert info.summary.cost_usd_spent <= 2.5 and "run.max_cost_usd" in info.stop_reason
    assert json.loads((out / "run.json").read_text())["stop_reason"] == info.stop_reason
    info = execute(compose_config(*tiny(tiny_model_dir, tmp_path, price, "task.limit=6", "run.batch_size=2",
                                        "run.max_cost_usd=100")), out)
    assert info.status == "finished" and info.summary.n == 6 and info.stop_reason is None
    recorded = json.loads((out / "run.json").read_text())
    assert "stop_reason" in recorded and recorded["stop_reason"] is None
