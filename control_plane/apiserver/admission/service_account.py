"""ServiceAccount admission, as Kubernetes': a pod runs as a service account
(spec.serviceAccountName, "default" when unset) that must exist, and,
unless it or its account opts out (automountServiceAccountToken: false),
it gets the projected `kube-api-access-*` volume (a bound token, the
cluster CA from the kube-root-ca.crt ConfigMap, its namespace) mounted in
every container at /var/run/secrets/kubernetes.io/serviceaccount.
"""

from __future__ import annotations

import random

from control_plane.apis.pods import all_containers
from control_plane.apis.resources import REGISTRY, Resource
from control_plane.apiserver.admission import CREATE, AdmissionRequest, Plugin, Reader, forbidden

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3607  # what Kubernetes projects (an hour, and a little)
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
SERVICE_ACCOUNTS: Resource = REGISTRY.lookup("", "v1", "serviceaccounts")  # type: ignore[assignment]
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def api_access_volume(name: str) -> dict[str, object]:
    return {
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }


class ServiceAccount(Plugin):
    name = "ServiceAccount"
    operations = frozenset((CREATE,))
    resources = frozenset(("pods",))
    mutating = True
    main_resource_only = True

    def __init__(self, reader: Reader):
        self.reader = reader

    async def admit(self, req: AdmissionRequest) -> None:
        pod = req.obj or {}
        spec = pod.get("spec")
        if not isinstance(spec, dict) or MIRROR_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {}):
            return
        account_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = spec["serviceAccount"] = account_name
        account = await self.reader.read(SERVICE_ACCOUNTS, req.namespace, account_name)
        if account is None:
            raise forbidden(
                req,
                f'error looking up service account {req.namespace}/{account_name}: serviceaccount "{account_name}" '
                "not found",
            )
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = account.get("automountServiceAccountToken", True)
        if automount is False:
            return
        containers = all_containers(spec)
        if any(m.get("mountPath") == MOUNT_PATH for c in containers for m in c.get("volumeMounts") or ()):
            return  # the pod mounts something of its own there
        # A name, not a secret: Kubernetes draws it from math/rand too.
        volume = f"kube-api-access-{''.join(random.choices(_ALPHABET, k=5))}"
        spec.setdefault("volumes", []).append(api_access_volume(volume))
        for container in containers:
            container.setdefault("volumeMounts", []).append({"name": volume, "readOnly": True, "mountPath": MOUNT_PATH})
