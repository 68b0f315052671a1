"""The command line as a newcomer meets it: one spelling in help, both accepted; flags that are flags; the
MLproject entry points mapping `-P force=true` to `--force`; `serve` on a taken port; runs named after the step."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from chatbot_model.cli.main import main
from tests.helpers import ROOT



def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_help_lists_every_command_with_dashes_only():
    out = cli("--help")
    assert out.exit_code == 0
    listed = [line.split()[0] for line in out.output.split("Commands:")[1].splitlines() if line.strip()]
    assert {"register-model", "promote-model", "build-index", "index-info", "sync-feedback"} <= set(listed)
    assert not [name for name in listed if "_" in name]


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_answers_to_both_spellings(name):
    dashed, underscored = cli(name, "--help"), cli(name.replace("-", "_"), "--help")
    assert dashed.exit_code == 0 and underscored.exit_code == 0, underscored.output
    assert underscored.output == dashed.output  # the usage line names the dashed command either way
    assert f"main {name}" in dashed.output


def test_an_unknown_command_is_still_refused():
    out = cli("register_models")
    assert out.exit_code == 2 and "No such command 'register_models'" in out.output


@pytest.mark.parametrize("command, flag", [("promote-model", "--force"), ("adapt", "--always")])
def test_force_and_always_are_flags_not_values(command, flag):
    help_line = next(line for line in cli(command, "--help").output.splitlines() if line.strip().startswith(flag))
    assert "BOOLEAN" not in help_line and "TEXT" not in help_line
    args = ["--stage", "Staging"] if command == "promote-model" else []
    out = cli(command, *args, flag, "true")  # a value after the flag is an unexpected argument
    assert out.exit_code == 2 and "unexpected extra argument (true)" in out.output


def entry_point_argv(entry: str, **params) -> list[str]:
    """The argv an MLproject entry point runs with `-P` params, through MLflow's own command builder and bash."""
    from mlflow.projects._project_spec import load_project

    command = load_project(str(ROOT)).get_entry_point(entry).compute_command(params, storage_dir=None)
    assert command.startswith("llmops-chatbot ")
    out = subprocess.run(["bash", "-c", "printf '%s\\n' " + command[len("llmops-chatbot "):]],
                         capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.mark.parametrize("value, forced", [("true", True), ("True", True), ("1", True), ("false", False)])
def test_mlproject_maps_force_true_to_the_flag(value, forced):
    argv = entry_point_argv("promote_model", name="m", stage="Production", force=value)
    assert argv[0] == "promote-model" and ("--force" in argv) is forced
    ctx = main.commands["promote-model"].make_context("promote-model", argv[1:])
    assert ctx.params["force"] is forced and ctx.params["stage"] == "Production"


def test_mlproject_maps_always_and_keeps_the_other_entry_points_parsing():
    argv = entry_point_argv("adapt", name="m", always="true")
    assert main.commands["adapt"].make_context("adapt", argv[1:]).params["always"] is True
    assert main.commands["adapt"].make_context("adapt", entry_point_argv("adapt")[1:]).params["always"] is False
    for entry, name in (("register_model", "register-model"), ("evaluate", "evaluate")):
        argv = entry_point_argv(entry)
        assert argv[0] == name
        main.commands[name].make_context(name, argv[1:])
    assert set(yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]) == {
        "register_model", "promote_model", "evaluate", "adapt", "batch_score"}


@pytest.mark.parametrize("partitions, expected", [("", None), ("4", 4)])
def test_mlproject_batch_score_entry_point_parses(partitions, expected):
    argv = entry_point_argv("batch_score", input=str(ROOT / "MLproject"), output="/data/answers.parquet",
                            partitions=partitions)
    assert argv[0] == "batch-score"
    params = main.commands["batch-score"].make_context("batch-score", argv[1:]).params
    assert params["partitions"] == expected and params["master"] == "local[*]"
    assert params["output"] == "/data/answers.parquet" and params["model_uri"] == "models:/llmops-chatbot@production"


# ------------------------------------------------------------------ serve on a taken port
def test_serve_on_a_taken_port_fails_at_once_before_registering_anything(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli("serve", "--ensure-model", "--port", str(port))
    assert out.exit_code == 1
    assert (f"port {port} on 127.0.0.1 is in use; choose another with `make run PORT=" in out.output
            and "`llmops-chatbot serve --port N`" in out.output), out.output
    client = MlflowClient()
    assert client.search_registered_models() == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    assert "chat page:" not in out.output


def test_serve_with_an_unknown_host_names_the_option():
    out = cli("serve", "--host", "no-such-host.invalid", "--port", "8000")
    assert out.exit_code == 1 and "cannot listen on 'no-such-host.invalid'" in out.output and "--host" in out.output


# ------------------------------------------------------------------ run names under `mlflow run`
@pytest.fixture
def mlflow_run_env(monkeypatch):
    """What `mlflow run` leaves for the command: a run MLflow created (random name) in MLFLOW_RUN_ID."""

    def make(run_name: str | None = None) -> str:
        experiment = MlflowClient().get_experiment_by_name("Default")
        run = MlflowClient().create_run(experiment.experiment_id, run_name=run_name)
        monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
        return run.info.run_id

    return make


def test_a_step_names_the_run_mlflow_run_created(mlflow_run_env):
    from chatbot_model.lifecycle.loop import _run

    run_id = mlflow_run_env()
    assert MlflowClient().get_run(run_id).info.run_name.count("-") == 2  # MLflow's random adjective-noun-N
    with _run("evaluate") as run:
        assert run.info.run_id == run_id
    assert MlflowClient().get_run(run_id).info.run_name == "evaluate"


def test_a_run_name_the_user_chose_is_kept(mlflow_run_env):
    from chatbot_model.lifecycle.loop import _run

    run_id = mlflow_run_env("nightly-eval")  # mlflow run --run-name nightly-eval
    with _run("evaluate"):
        pass
    assert MlflowClient().get_run(run_id).info.run_name == "nightly-eval"
    assert mlflow.active_run() is None and "MLFLOW_RUN_ID" not in os.environ


def test_cli_module_imports_stay_light():
    """--help must not import the heavy stack (torch, mlflow, the service)."""
    code = ("import sys; from chatbot_model.cli.main import main; "
            "print([m for m in ('torch', 'mlflow', 'chatbot_model.pipeline.service', 'uvicorn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_ask_refuses_an_empty_question_before_loading_anything(monkeypatch):
    import chatbot_model.cli.main as cli_module

    def never(*args, **kwargs):
        raise AssertionError("the service must not be built for an invalid question")

    monkeypatch.setattr(cli_module, "_service", never)
    out = CliRunner().invoke(main, ["ask", "  \u200b "])
    assert out.exit_code == 1 and "Error: question is empty; ask something in words" in out.output
    assert "Traceback" not in out.output
