"""Polymarket's own wire formats, shared by the simulator (which writes them) and the ingest
(which reads them): the market-channel schemas and the venue's book-hash rule."""
