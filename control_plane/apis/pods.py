"""Small readings of a pod spec that many parts need (admission, the Node
authorizer, the node agent)."""

from __future__ import annotations

from typing import Any


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The init containers, then the containers (malformed entries left out:
    validation reports them)."""
    return [c for c in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())] if isinstance(c, dict)]
