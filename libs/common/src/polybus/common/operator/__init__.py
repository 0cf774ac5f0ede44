"""The operator's terminal tools behind ``polybus tail``, ``status``, ``top`` and ``book``.

The CLI (:mod:`polybus.common.cli`) parses options and prints; the reading of streams, the
formatting of events and books and the gathering of figures live here, one module per idea:
:mod:`.stream_reader` (JetStream windows and wildcard filters), :mod:`.tail_format` (one human
line per event), :mod:`.book_ladder` (the ladder of ``polybus book``), :mod:`.activity`
(positions, rejects and book states from the streams, for ``status`` and ``top``) and
:mod:`.scrape` (figures from the services' ``/metrics`` endpoints).
"""
