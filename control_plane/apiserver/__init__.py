"""The API server: one service layer holding the semantics (validation,
defaulting, storage, watch) with thin front ends: Kubernetes REST
(rest.py) and the gRPC Resources service (grpc_service.py)."""
