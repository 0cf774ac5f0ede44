"""polybus.sim: a protocol-exact, offline Polymarket (market/user WebSockets, CLOB REST, Gamma)."""
