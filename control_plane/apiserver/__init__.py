"""The API server: one service layer holding the semantics (validation,
defaulting, storage, watch) with thin front ends (REST today)."""
