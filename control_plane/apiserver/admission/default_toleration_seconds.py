"""DefaultTolerationSeconds: a pod that does not say how long it stays on a
node that is not ready or unreachable stays 300 s (then the node-lifecycle
controller evicts it), as Kubernetes' plugin adds."""

from __future__ import annotations

from typing import Any

from control_plane.apiserver.admission import CREATE, AdmissionRequest, Plugin

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
DEFAULT_SECONDS = 300


def _tolerates(toleration: dict[str, Any], key: str) -> bool:
    if toleration.get("effect") not in (None, "", "NoExecute"):
        return False
    if toleration.get("operator") == "Exists" and not toleration.get("key"):
        return True
    return toleration.get("key") == key


class DefaultTolerationSeconds(Plugin):
    name = "DefaultTolerationSeconds"
    operations = frozenset((CREATE,))
    resources = frozenset(("pods",))
    mutating = True
    main_resource_only = True
    validating = False

    def __init__(self, seconds: int = DEFAULT_SECONDS):
        self.seconds = seconds

    async def admit(self, req: AdmissionRequest) -> None:
        spec = (req.obj or {}).get("spec")
        if not isinstance(spec, dict):
            return
        tolerations = spec.get("tolerations")
        if tolerations is None:
            tolerations = spec["tolerations"] = []
        if not isinstance(tolerations, list):
            return  # validation refuses it
        for key in (NOT_READY, UNREACHABLE):
            if not any(isinstance(t, dict) and _tolerates(t, key) for t in tolerations):
                tolerations.append(
                    {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": self.seconds}
                )
