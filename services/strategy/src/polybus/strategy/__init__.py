"""polybus.strategy: strategies turn verified books into order intents (DESIGN §1, §5)."""
