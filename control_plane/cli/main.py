"""Entry point of the `raftkube` command.

Commands of the layers above the control plane (the node agent's `agent`)
join through the "raftkube.commands" entry points declared in
pyproject.toml, so the control plane never imports them.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import click

from control_plane.cli.init import init
from control_plane.cli.local import down, up
from control_plane.cli.server import server
from control_plane.cli.store import store


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raftkube")
def cli() -> None:
    """raftkube: a Kubernetes-style control plane replicated by Raft."""


cli.add_command(init)
cli.add_command(server)
cli.add_command(up)
cli.add_command(down)
cli.add_command(store)
for entry in entry_points(group="raftkube.commands"):
    cli.add_command(entry.load(), entry.name)


def main() -> None:
    cli()
