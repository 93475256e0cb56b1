"""The client library every control-plane component uses, as client-go:
ApiClient (gRPC, fails over between masters), Informer and Lister (a
watched local cache), and RateLimitingQueue (the controllers' work queue)."""

from control_plane.client.api import ApiClient, resource
from control_plane.client.credentials import INSECURE, ClientCredentials
from control_plane.client.informer import Informer, Lister, key_of
from control_plane.client.workqueue import RateLimitingQueue, ShutDown

__all__ = [
    "INSECURE",
    "ApiClient",
    "ClientCredentials",
    "Informer",
    "Lister",
    "RateLimitingQueue",
    "ShutDown",
    "key_of",
    "resource",
]
