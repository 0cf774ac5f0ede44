"""The live venue: Polymarket's CLOB through the official SDK, create-then-post only."""
