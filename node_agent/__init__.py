"""The node agent (`raftkube agent`), raftkube's kubelet: it registers its
Node, keeps the node's Lease renewed over a gRPC heartbeat stream, runs the
pods bound to it through a container runtime, reports their status and
serves their logs.

It imports only control_plane.apis, control_plane.client and the generated
stubs: it is a client of the masters like any other.
"""
