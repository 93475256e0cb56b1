"""`raftkube init`: a cluster directory's secret, certificates and tokens,
for masters and agents started by hand (`raftkube up` does the same for
its own cluster)."""

from __future__ import annotations

import click

from control_plane.security.cluster_dir import ClusterDir


def _master(value: str) -> tuple[str, list[str]]:
    member_id, sep, hosts = value.partition("=")
    if not sep or not member_id or not hosts:
        raise click.BadParameter(f"{value!r} is not ID=HOST[,HOST...]")
    return member_id, [h.strip() for h in hosts.split(",") if h.strip()]


@click.command()
@click.option("--dir", "directory", default=".raftkube", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--master",
    "masters",
    multiple=True,
    required=True,
    help="ID=HOST[,HOST...]: a master and the addresses or names it is reached at (repeat).",
)
@click.option("--node", "nodes", multiple=True, help="A node agent's name, for its client certificate (repeat).")
@click.option("--hollow-nodes", default=0, show_default=True, help="Client certificates for this many hollow nodes.")
@click.option("--hollow-prefix", default="hollow", show_default=True, help="Their names: PREFIX-0, PREFIX-1, ...")
def init(
    directory: str, masters: tuple[str, ...], nodes: tuple[str, ...], hollow_nodes: int, hollow_prefix: str
) -> None:
    """Write the cluster secret, the CA, serving and client certificates and
    the token file into DIR; what exists is kept, what is missing is added."""
    try:
        parsed = dict(_master(m) for m in masters)
    except click.BadParameter as e:
        raise click.UsageError(str(e)) from None
    cluster = ClusterDir(directory)
    written = cluster.init(parsed, nodes)
    if hollow_nodes:
        written += cluster.init_hollow(hollow_prefix, hollow_nodes)
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo(f"{directory}: everything was already there")
