"""The torch-free base every other part of hfr-edge stands on, and which depends on nothing else in
hfr_edge: errors, atomic writes, optional imports, the I/O contract and artifact metadata, image
reading and pre-processing, and the console that prints messages."""
