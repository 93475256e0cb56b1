"""The `raftkube` command line: masters (`server`), local clusters (`up`,
`down`) and a client of the replicated store (`store ...`)."""
