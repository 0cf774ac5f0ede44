"""DESIGN §10 failure behaviour: every scenario and the test that shows it.

Here, against one running `polybus up --live` of config/sim.toml (tests/faults/pipeline.py; the
executor trades live against the simulator with a throwaway key, so the venue's own faults
reach it), in tests/faults/test_faults.py:
- Executor crash, and SIGKILL of ingest, recorder and each strategy under load, restarted by the
  supervisor: the recorder's rows cover every MD/EXEC/INTENT sequence, no event recorded twice,
  no intent placed twice: test_a_killed_service_is_restarted_and_nothing_is_lost_or_doubled.
- Postgres down (its server SIGKILLed, restarted by the supervisor): the recorder catches up,
  EXEC kept growing: test_postgres_down_the_executor_keeps_trading_and_the_recorder_catches_up.
- NATS restart (the embedded nats-server SIGKILLed, restarted from its store): every service
  reconnects by itself (the same pids, fresh heartbeats), nothing acknowledged lost, no intent
  placed twice, trading and books move again:
  test_a_nats_restart_is_ridden_out_by_every_service_and_nothing_is_lost_or_doubled.
- Halt: open orders canceled, no new orders, holds across an executor restart, resume trades
  again: test_halt_cancels_open_orders_refuses_places_and_resume_trades_again.
- Malformed or unknown venue frame, never a crash: one dead letter per input on DLQ and in
  PostgreSQL, books flow on:
  test_a_burst_of_malformed_frames_is_dead_lettered_and_ingest_keeps_going.
- Venue WS silent stall or abrupt disconnect (the simulator's fault admin, every market
  socket): books marked stale with the reason, the ingest (the same process) reconnects and
  every book is live again from a snapshot, deltas reach PostgreSQL again, and the strategies
  pulled their quotes on the stale books (cancel intents, reason book_untradeable):
  test_a_venue_stall_or_disconnect_is_healed_and_the_stale_quotes_pulled.
- 425/503/429 from the CLOB (the simulator's engine restart, trading disabled and rate-limit
  windows): orders accepted again after the window, the executor's retries at most one per
  Retry-After (425/429) and none for a 503 without one, no intent placed twice, status healthy:
  test_a_venue_window_is_waited_out_and_no_intent_is_placed_twice. Decision: these windows
  only reach a live executor, so this pipeline runs live against the simulator rather than on
  paper (one pipeline for every scenario, ~1 min to start); the exact retry arithmetic (how
  many requests, the Retry-After waits, a restart longer than the budget) stays at integration
  level, see below.
- All of the above at random, seeded, for a while, then the invariants: tests/faults/test_soak.py
  (a short `bench/soak.py`; docs/operations.md, "Soak").

Elsewhere:
- Venue WS disconnect or silent stall, per socket and per asset (reconnect, resubscribe, stale
  until a snapshot, the books equal to the venue's): tests/integration/test_ingest_sim.py
  test_a_silent_stall_is_detected_and_healed,
  test_an_abrupt_disconnect_is_detected_and_healed; strategies pull their quotes meanwhile:
  tests/unit/test_strategy_runtime.py
  test_an_untradeable_book_cancels_its_working_orders_and_tells_the_strategy.
- Local book disagrees with the venue (hash, best prices): tests/integration/test_ingest_sim.py
  test_a_dropped_delta_is_detected_and_the_asset_resynced,
  test_a_persistently_crossed_book_is_resynced,
  test_a_consumer_that_misses_a_seq_rebuilds_from_a_snapshot.
- Siblings of a bad element in one frame still applied: tests/integration/test_ingest_sim.py
  test_a_bad_frame_is_dead_lettered_its_siblings_applied_and_nothing_dies.
- NATS restart, nothing acknowledged lost, per client: tests/integration/test_bus_reconnect.py,
  test_bus_kill.py, test_halt.py test_halt_and_resume_commands_survive_a_nats_restart,
  test_leases.py test_a_nats_restart_keeps_no_two_holders; a clustered node:
  tests/cluster/test_nats_cluster.py.
- Postgres down for 10 s under load, acking only what is committed; recorder SIGKILL mid-way
  through 100k events: tests/integration/test_recorder_faults.py.
- Executor crash against the venue (heartbeat cancels, reconcile before intents):
  tests/integration/test_executor_service_live.py
  test_a_killed_executor_loses_its_orders_to_the_heartbeat_and_reconciles_on_restart,
  tests/integration/test_executor_reconcile.py, tests/unit/test_executor_heartbeat.py.
- Submit outcome unknown, reconciled, never resubmitted: tests/integration/test_executor_live.py
  test_an_answer_lost_after_the_venue_took_the_order_is_unknown_and_not_resent,
  tests/integration/test_executor_reconcile.py, tests/unit/test_executor_reconcile.py.
- 425/503/429 back off per Retry-After, request by request: tests/integration/test_executor_live.py
  test_an_engine_restart_is_waited_out_and_the_order_placed_once,
  test_a_restart_longer_than_the_budget_refuses_without_an_order,
  test_rate_limit_answers_are_waited_out_per_retry_after,
  test_post_only_mode_refuses_takers_keeps_makers_and_stops_asking;
  tests/integration/test_sim_trading.py test_a_restart_window_answers_425_then_post_only.
- SIGTERM/SIGINT at any moment stops within 2 s, exit 0: tests/integration/test_signals.py.
- Bad CLI input, one line and the documented exit code: tests/integration/test_cli_errors.py.
"""
