"""The `mascompare` command: run (Hydra, in-process), list, show, compare.

Bad input ends with one sentence on stderr and exit status 2; `HYDRA_FULL_ERROR=1` shows the traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mascompare.errors import UserError
from mascompare.registry import suggest, unknown

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Run one task on one model under several multi-agent methods and compare them.",
)
err = Console(stderr=True, soft_wrap=True)  # one sentence stays one line

CONFIG_GROUPS = ("method", "task", "model", "backend")
API_KEY_OVERRIDE = re.compile(r"^\+{0,2}backend\.api_key=(.*)$")
USAGE_ERROR = 2


def conf_dir() -> Path:
    from mascompare.app import CONF_DIR

    return CONF_DIR


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def describe(path: Path) -> str:
    """The first comment line of a config file, which says what it is."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
    return ""


def check_overrides(overrides: list[str]) -> None:
    """Catch bad syntax and unknown group choices before Hydra starts, with "did you mean"."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for text in overrides:
        if text.startswith("-"):
            continue  # a Hydra flag such as --resolve
        try:
            (override,) = OverridesParser.create().parse_overrides([text])
        except OverrideParseException as exc:
            raise UserError(f"Cannot parse the override '{text}': {str(exc).splitlines()[0]}; "
                            "overrides look like key=value, e.g. task.limit=10.") from None
        group = override.key_or_group
        if group not in CONFIG_GROUPS or override.is_delete():
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        options = group_options(group)
        for value in values:
            if str(value) not in options:
                raise unknown(group, str(value), options)


def explain_hydra_error(exc: Exception, overrides: list[str]) -> str:
    """Turn Hydra's multi-line composition errors into one sentence."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ConfigCompositionException) and first.startswith("Could not override"):
        key = first.split("'")[1]
        parent, _, leaf = key.rpartition(".")
        hint = suggest(leaf, _keys_under(parent, overrides)) if leaf else ""
        cause = str(exc.__cause__).splitlines()[0] if exc.__cause__ else ""
        if "not in struct" in cause:
            return f"Unknown config key '{key}'.{hint} To add a new key, write '+{key}=...'."
        return f"Cannot override '{key}': {cause or first}."
    if isinstance(exc, MissingConfigException):
        return f"{first.rstrip('.')} in {conf_dir()}."
    return first.rstrip(".") + "."


def _keys_under(parent: str, overrides: list[str]) -> list[str]:
    """The keys of one config node, composed with the user's group choices (for suggestions)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    groups = [o for o in overrides if o.split("=", 1)[0] in CONFIG_GROUPS and "," not in o]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=groups)
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:
        return []
    finally:
        GlobalHydra.instance().clear()
    return list(node.keys()) if hasattr(node, "keys") else []


def launch_hydra(argv: list[str]) -> None:
    """Call the @hydra.main app in this process with argv as its command line."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from mascompare.app import StopRun, main

    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = argv
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us, so we can state them in one sentence
    try:
        main()
    except (StopRun, UserError, HydraException) as exc:
        if user_wants_traceback:
            raise exc.error if isinstance(exc, StopRun) else exc
        if isinstance(exc, StopRun):
            message = str(exc.error)
        else:
            message = str(exc) if isinstance(exc, UserError) else explain_hydra_error(exc, argv[1:])
        err.print(f"[bold red]error:[/] {message}", highlight=False)
        raise typer.Exit(USAGE_ERROR) from None
    except KeyboardInterrupt:
        err.print("interrupted: finished samples are saved; run the same command again to resume.")
        raise typer.Exit(130) from None
    except Exception as exc:
        if user_wants_traceback:
            raise
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc} (set HYDRA_FULL_ERROR=1 for the traceback)",
                  highlight=False)
        raise typer.Exit(1) from None
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env
        GlobalHydra.instance().clear()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    multirun: bool = typer.Option(False, "--multirun", "-m", help="Sweep: run every combination of comma lists."),
    cfg: str = typer.Option(None, "--cfg", "-c", help="Print the config instead of running: job, hydra or all."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count requests, tokens and cost; call no model."),
):
    """Run one configuration, e.g. `mascompare run method=baseline task=arith task.limit=20`.

    Arguments are Hydra overrides (key=value); `mascompare list` shows the choices.
    """
    overrides = [o for o in ctx.args if not API_KEY_OVERRIDE.match(o)]
    # A key given on the command line reaches the backend through the environment, so that it never
    # enters the config, where Hydra would write and log it with the overrides.
    keys = [API_KEY_OVERRIDE.match(o).group(1) for o in ctx.args if API_KEY_OVERRIDE.match(o)]
    if keys:
        os.environ["OPENAI_API_KEY"] = keys[-1]
        err.print("[bold yellow]warning:[/] backend.api_key on the command line is visible to every local user "
                  "(ps); use $OPENAI_API_KEY or backend.api_key_file=PATH instead.", highlight=False)
    try:
        check_overrides(overrides)
    except UserError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(USAGE_ERROR) from None
    argv = ["mascompare", *overrides]
    if dry_run:  # and leave no files behind: no Hydra record of the run, no log file
        argv += ["run.dry_run=true", "hydra.output_subdir=null", "hydra.job_logging.root.handlers=[console]"]
    if multirun:
        argv.append("--multirun")
    if cfg:
        argv += ["--cfg", cfg]
    launch_hydra(argv)


@app.command("list")
def list_choices():
    """List the methods, tasks, model presets and backends that `run` accepts."""
    import yaml

    defaults = {}
    for item in yaml.safe_load((conf_dir() / "config.yaml").read_text())["defaults"]:
        if isinstance(item, dict):
            defaults.update({k: v for k, v in item.items() if k in CONFIG_GROUPS})
    console = Console()
    for group in CONFIG_GROUPS:
        table = Table(title=f"{group}=", title_justify="left", show_header=False)
        table.add_column(style="bold cyan")
        table.add_column()
        for name in group_options(group):
            mark = " (default)" if defaults.get(group) == name else ""
            table.add_row(name + mark, describe(conf_dir() / group / f"{name}.yaml"))
        console.print(table)


@app.command()
def show(run_dir: Path = typer.Argument(..., help="A run directory (holds run.json).")):
    """Print the summary of a run."""
    from mascompare.display import print_summary

    path = run_dir / "run.json"
    if not path.is_file():
        err.print(f"[bold red]error:[/] {run_dir} is not a run directory: it has no run.json.", highlight=False)
        raise typer.Exit(USAGE_ERROR)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        err.print(f"[bold red]error:[/] {path} is not valid JSON (line {exc.lineno}).", highlight=False)
        raise typer.Exit(USAGE_ERROR) from None
    print_summary(info)


@app.command()
def compare(
    paths: list[Path] = typer.Argument(..., help="Run directories, a results root or a multirun directory."),
    reference: str = typer.Option(
        None, "--reference", "-r",
        help="Method the others are measured against (default: text_mas when present, else baseline); "
             "narrow it with config values: pruned_mas:method.prune_rate=0."),
    by: list[str] = typer.Option(None, "--by",
                                 help="Config key shown as a column, e.g. method.latent_steps (repeatable)."),
    metric: str = typer.Option("flexible", "--metric",
                               help="Accuracy for the paired statistics and the plot: strict or flexible."),
    out: Path = typer.Option(None, "--out", "-o",
                             help="Where comparison.{md,csv,tex} and pareto.png go (default: the one PATH, "
                                  "or the deepest folder holding all PATHs)."),
):
    """Compare runs side by side: accuracy, tokens, time and cost, with paired statistics against a reference."""
    from mascompare import report

    try:
        comparison = report.compare(report.collect(paths), reference, by or (), metric)
    except UserError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(USAGE_ERROR) from None
    report.render(comparison, Console())
    target = out or Path(os.path.commonpath([str((p.parent if p.is_file() else p).resolve()) for p in paths]))
    written = report.write(comparison, target)
    err.print(f"wrote {', '.join(p.name for p in written)} to {target}", highlight=False)


if __name__ == "__main__":
    app()
