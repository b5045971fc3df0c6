"""The ``trainpod`` command line.

Commands are thin: parse, call ONE library function, print. They are registered here by module
path and loaded lazily, so ``trainpod --help`` imports click and nothing else of weight; a command's
own module imports its library code inside the command function.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys

import click

# name -> (module, attribute, one-line help). Help text lives here so `--help` imports nothing.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "list": ("trainpod.commands.catalog", "list_cmd", "List presets, jobs, pipelines, experts, hardware, datasets, lora, hyperparameters."),
    "show": ("trainpod.commands.catalog", "show", "Show a preset fully resolved (secrets redacted)."),
    "validate": ("trainpod.commands.catalog", "validate", "Validate one preset, several, or --all."),
    "launch": ("trainpod.commands.launch", "launch", "Launch a preset or job locally, on Docker, or on RunPod."),
    "runs": ("trainpod.commands.runs", "runs", "List, inspect, tail, cancel and sweep runs."),
    "evaluate": ("trainpod.commands.evaluate", "evaluate", "Evaluate a trained output directory on its test split."),
    "build": ("trainpod.commands.images", "build", "Build the training image for a hardware profile or preset."),
    "push": ("trainpod.commands.images", "push", "Push the training image to the configured registry."),
    "data": ("trainpod.commands.data", "data", "Push, pull and list datasets in S3 or local storage."),
    "pipeline": ("trainpod.commands.pipeline", "pipeline", "Run a multi-stage pipeline of presets and jobs."),
    "completion": ("trainpod.commands.catalog", "completion", "Print the shell completion script (bash, zsh, fish)."),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (mod, _, _) in COMMANDS.items() if _available(mod)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None or not _available(entry[0]):
            return None
        module = importlib.import_module(entry[0])
        return getattr(module, entry[1])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config", "config", envvar="TRAINPOD_CONFIG", type=click.Path(dir_okay=False),
              help="training.toml overlaid on the packaged defaults (default: ./profiles/training.toml if present).")
@click.option("--profile", envvar="TRAINPOD_PROFILE", help="Env profile: reads profiles/NAME.env (no secrets).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="trainpod", prog_name="trainpod")
@click.pass_context
def cli(ctx: click.Context, config: str | None, profile: str | None, verbose: int) -> None:
    """trainpod: fine-tune models on your machine, a local Docker engine, or RunPod GPU pods.

    \b
    trainpod list presets
    trainpod show smoke
    trainpod launch smoke --remote local
    trainpod launch oracle-rauru-cloud --remote runpod --dry-run
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    if profile:  # a missing env profile is an error for every command, not only those that read settings
        from trainpod.settings import find_profile

        find_profile(profile)
    ctx.obj = {"config": config, "profile": profile, "verbose": verbose}


def main(argv: list[str] | None = None) -> None:
    from trainpod.errors import TrainpodError

    try:
        cli.main(args=argv, prog_name="trainpod", standalone_mode=False)
    except TrainpodError as exc:
        from trainpod.redact import redact_text

        click.echo(f"error: {redact_text(exc.message)}", err=True)
        if exc.hint:
            click.echo(f"  hint: {redact_text(exc.hint)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `trainpod list presets | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
