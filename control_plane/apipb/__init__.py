"""Generated protobuf and gRPC stubs of the resource API (make proto)."""
