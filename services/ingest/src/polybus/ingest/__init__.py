"""polybus.ingest: exact, verified L2 books for thousands of Polymarket assets, to NATS."""
