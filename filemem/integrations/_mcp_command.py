"""Registers ``filemem mcp`` with the command line (through the ``filemem.commands`` entry point).

Invariant: imports only the standard library and filemem, so the command
exists (and says how to install the ``mcp`` extra) even where the extra is
missing; see filemem/_cli/__init__.py for the plugin mechanism.
"""

from __future__ import annotations

import argparse

from filemem._cli._base import Output, command
from filemem.integrations.mcp._main import add_arguments, run

__all__: list[str] = []


@command(
    "mcp",
    help="serve the store as an MCP memory server (a drop-in for @modelcontextprotocol/server-memory)",
    description="Serve the reference MCP memory server's nine knowledge-graph tools (create_entities, "
    "create_relations, add_observations, delete_entities, delete_observations, delete_relations, read_graph, "
    "search_nodes, open_nodes: same names, schemas and results) over stdio, or streamable HTTP on 127.0.0.1 with "
    "--http. Entities and relations are filemem records, so any number of servers may share one store without "
    "losing a write. --filemem-tools adds put, get, search, list_namespaces and recall_context. --import FILE "
    "loads a reference server's memory.jsonl and exits. Needs the mcp extra to serve: pip install "
    '"filemem[mcp]".',
    example="filemem mcp ./memories   (in Claude Code: claude mcp add memory -- filemem mcp ./memories)",
    store=None,
    arguments=add_arguments,
)
def _mcp(args: argparse.Namespace, out: Output) -> int:
    return run(args, out.stream)
