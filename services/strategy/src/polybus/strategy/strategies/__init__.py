"""The built-in strategies: complete-set arbitrage and spread capture (docs/strategies.md)."""

from polybus.strategy.strategies.dutch_book import DutchBook, DutchBookSettings
from polybus.strategy.strategies.spread_capture import SpreadCapture, SpreadCaptureSettings

__all__ = ["DutchBook", "DutchBookSettings", "SpreadCapture", "SpreadCaptureSettings"]
