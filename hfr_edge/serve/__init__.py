"""Fleets: the detector on Triton Inference Server. `repository` writes a model repository for the
NGC server containers; `server` serves an artifact through PyTriton; the client side is
hfr_edge.runtime.remote (`run --server`, `bench --server`)."""
