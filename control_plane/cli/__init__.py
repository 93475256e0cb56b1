"""The `raftkube` command line: masters (`server`), local clusters (`up`,
`down`) and a client of the replicated store (`store ...`)."""

import os

# raftkube's processes start child processes (the agent's containers and
# probes) while gRPC threads run: gRPC's fork handlers then abort the
# child before it can exec. Nothing here uses gRPC in a forked child, so
# they are turned off, before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
