"""polybus.executor: where intents become orders — risk gate, venue adapters, reconciliation."""
