"""Polymarket's own wire formats, shared by the simulator (which writes them) and the services
that read them: the market-channel and CLOB market-data schemas, the venue's book-hash rule, and
the trading schemas (CLOB order, cancel, heartbeat and query bodies; user-channel frames)."""
