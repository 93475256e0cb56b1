"""`python -m node_agent ...`: the agent command, as `raftkube agent` runs it."""

import os

# Before grpc is imported: see control_plane/cli/__init__.py.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from node_agent.cli import agent

agent()
