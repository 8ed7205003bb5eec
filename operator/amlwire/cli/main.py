"""amlwire: run the operator, diagnose the wiring, lint AML job YAML, run the sandbox or the demo."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from amlwire import __version__
from amlwire.cli import development_tool


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="amlwire")
def cli() -> None:
    """Wire AKS into Azure Machine Learning with keyless workload identity, and run IsaacLab jobs on it."""


@cli.command()
def run() -> None:
    """Run the operator (settings from AMLWIRE_* environment variables)."""
    from kubernetes.config import ConfigException

    from amlwire.cli.settings import load_settings
    from amlwire.main import run as run_operator

    settings = load_settings()
    try:
        run_operator(settings)
    except ConfigException as error:
        where = f"AMLWIRE_KUBECONFIG={settings.kubeconfig}" if settings.kubeconfig else "KUBECONFIG or ~/.kube/config"
        click.echo(f"amlwire: cannot reach Kubernetes: {error} (outside a pod, set {where})", err=True)
        raise SystemExit(2) from None


@cli.command()
@click.option(
    "--world",
    "world_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="World file (YAML) seeding the sandbox, e.g. examples/sandbox/world.yaml.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, type=int, help="Port to listen on (default: a free port).")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("sandbox-ca.pem"),
    show_default=True,
    help="Where to write the sandbox's CA certificate (PEM).",
)
@click.option("--seed", default=0, type=int, show_default=True, help="Seed of probabilistic fault injection.")
@click.option(
    "--options",
    "options_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="World options laid over the world file, e.g. the conformance.yaml `amlwire conformance` wrote.",
)
def sandbox(world_file: Path, host: str, port: int, ca_file: Path, seed: int, options_file: Path | None) -> None:
    """Run the local Azure sandbox: an HTTPS emulator of the ARM endpoints amlwire uses."""
    with development_tool("sandbox"):
        from amlwire_sandbox.server import SandboxServer
        from amlwire_sandbox.world import World

    server = SandboxServer(World.load(world_file, options_file), ca_file.resolve(), host=host, port=port, seed=seed)

    async def serve() -> None:
        await server.serve()
        click.echo(f"amlwire sandbox listening on {server.base_url} (CA: {server.ca_file})")
        click.echo("Point amlwire and the Azure SDKs at it with:")
        for name, value in server.environment().items():
            click.echo(f"  export {name}={value}")
        click.echo(f"Control API: {server.base_url}/_sandbox/ (calls, counts, faults, state, reset). Ctrl-C stops.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()

    asyncio.run(serve())


def _register_subcommands() -> None:
    from amlwire.cli.conformance import conformance
    from amlwire.cli.demo import demo
    from amlwire.cli.doctor import doctor
    from amlwire.cli.lint import lint

    cli.add_command(conformance)
    cli.add_command(demo)
    cli.add_command(doctor)
    cli.add_command(lint)


_register_subcommands()


if __name__ == "__main__":
    cli()
