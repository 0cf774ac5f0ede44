"""Fault scenarios (DESIGN §10) against the running pipeline, and where each one is tested.

Here (tests/faults/test_faults.py, one `polybus up` of config/sim.toml for all):
- Executor crash, and SIGKILL of ingest, recorder and each strategy under load: the supervisor
  restarts it; the recorder's rows cover every MD/EXEC/INTENT sequence, no event twice, no
  intent placed twice (test_a_killed_service_is_restarted_and_nothing_is_lost_or_doubled).
- Postgres down (postgres killed, restarted by the supervisor): the recorder catches up, EXEC
  kept growing (test_postgres_down_the_executor_keeps_trading_and_the_recorder_catches_up).
- Halt: open orders canceled, no new orders, resume trades again
  (test_halt_cancels_open_orders_refuses_places_and_resume_trades_again).
- Malformed or unknown venue frame: dead letters on dlq.>, ingest keeps running, books flow
  (test_a_burst_of_malformed_frames_is_dead_lettered_and_ingest_keeps_going).

Elsewhere (grep tests/ for them): see the list below, kept by hand.
"""
