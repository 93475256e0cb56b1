"""The cluster's security material and, as issue 4 proceeds, its
authentication, authorization and audit: pki.py (certificates) and
cluster_dir.py (what `raftkube init` writes)."""
