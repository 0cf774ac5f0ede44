"""polybus.recorder: every event into PostgreSQL/TimescaleDB, lossless and idempotent."""
