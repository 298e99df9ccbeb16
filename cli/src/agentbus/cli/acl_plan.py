"""`agentbus acl-plan`: the Kafka ACLs each identity needs, for an admin to review and apply."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import orjson
import typer
from agentbus.shared.acls import DEFAULT_PRINCIPAL, Acl, acl_plan, kafka_acls_commands
from rich.console import Console
from rich.table import Table

from .options import fail


class Format(StrEnum):
    table = "table"
    kafka_acls = "kafka-acls"
    json = "json"


def command(
    prefix: Annotated[
        str | None,
        typer.Option(help="topic prefix of the deployment (default: AGENTBUS_TOPIC_PREFIX, else none)"),
    ] = None,
    principal: Annotated[
        str,
        typer.Option(
            help="principal for each identity; {identity} is replaced (mTLS: 'User:CN=agentbus-{identity}')"
        ),
    ] = DEFAULT_PRINCIPAL,
    output: Annotated[Format, typer.Option("--format", help="table, kafka-acls (commands) or json")] = (
        Format.table
    ),
    bootstrap: Annotated[
        str, typer.Option(help="--bootstrap-server in kafka-acls commands")
    ] = "$KAFKA_BOOTSTRAP_SERVERS",
    command_config: Annotated[
        str | None, typer.Option(help="admin client properties file for kafka-acls commands")
    ] = None,
) -> None:
    """Print, for every service identity (and the ticket source, operators and the init job), exactly
    the topics and consumer groups it may read, write, describe or create: derived from the topic map
    the services run on, so a service that uses a topic outside it fails before Kafka denies it."""
    topic_prefix = os.environ.get("AGENTBUS_TOPIC_PREFIX", "") if prefix is None else prefix
    try:
        plan = acl_plan(topic_prefix, principal)
    except ValueError as exc:
        fail(str(exc))
    if output is Format.kafka_acls:
        for line in kafka_acls_commands(plan, bootstrap, command_config):
            typer.echo(line)
    elif output is Format.json:
        typer.echo(orjson.dumps([acl.__dict__ for acl in plan], option=orjson.OPT_INDENT_2).decode())
    else:
        print_table(plan)


def print_table(plan: list[Acl]) -> None:
    table = Table(title=f"Kafka ACLs: {len(plan)} allow rules (deny is Kafka's default)")
    for column in ("principal", "operation", "resource", "name", "pattern"):
        table.add_column(column)
    last = None
    for acl in plan:
        if last is not None and acl.identity != last:
            table.add_section()
        last = acl.identity
        table.add_row(acl.principal, acl.operation, acl.resource, acl.name, acl.pattern)
    Console(width=160).print(table)
