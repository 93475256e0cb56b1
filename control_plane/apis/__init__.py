"""The API's types: the resource table, metadata, validation and defaulting.
Objects are Kubernetes-shaped JSON (plain dicts); nothing here does I/O."""
