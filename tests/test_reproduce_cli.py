"""python -m mapping.reproduce: one sub-command per experiment, each with its own flags and argparse's checks."""
import pytest

from mapping import reproduce


def parse(argv):
    return reproduce.parser().parse_args(argv)


def test_every_experiment_is_a_sub_command_with_the_common_flags():
    for name in reproduce.EXPERIMENTS:
        args = parse([name, "--mode", "smoke", "--seed", "3", "--no-resume", "--name", "x_1"])
        assert (args.experiment, args.mode, args.seed, args.resume, args.name) == (name, "smoke", 3, False, "x_1")


@pytest.mark.parametrize("argv, flag", [
    (["sinusoid", "--episodes", "3"], "--episodes"),  # omniglot-metric's flag
    (["transfer", "--jobs", "2"], "--jobs"),  # one run at a time; --threads applies to every experiment
    (["recognizer", "--methods", "maml"], "--methods"),
    (["sinusoid", "--model", "x.pt"], "--model"),
    (["omniglot-metric", "--iterations", "5"], "--iterations"),
])
def test_a_flag_of_another_experiment_is_refused_by_name(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    (["sinusoid", "--jobs", "0"], "--jobs"), (["omniglot-maml", "--iterations", "-1"], "--iterations"),
    (["omniglot-metric", "--halve-every", "x"], "--halve-every"), (["combine", "--name", "a/b"], "--name"),
    (["sinusoid", "--mode", "fast"], "--mode"),
])
def test_a_bad_value_is_refused_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit):
        parse(argv)
    assert f"argument {flag}" in capsys.readouterr().err


def test_the_flags_reach_the_experiment():
    args = parse(["omniglot-metric", "--methods", "siamese", "--episodes", "9000", "--halve-every", "3000",
                  "--jobs", "2", "--threads", "1", "--amp"])
    assert (args.methods, args.episodes, args.halve_every, args.jobs, args.threads, args.amp) == (
        ["siamese"], 9000, 3000, 2, 1, True)
    assert parse(["omniglot-maml", "--setting", "paper"]).setting == "paper"
    assert parse(["sinusoid", "--eager"]).eager and not parse(["sinusoid"]).eager


def test_every_stored_records_command_still_parses():
    """The same command reproduces a record: each command stored under results/ is accepted as it stands."""
    import json
    import shlex
    from pathlib import Path
    commands = []
    for path in sorted((Path(__file__).parents[1] / "results").glob("*.json")):
        command = json.loads(path.read_text()).get("command", "")
        if command.startswith("python -m mapping.reproduce "):
            commands.append(command)
            parse(shlex.split(command)[3:])
    assert len(commands) >= 10
