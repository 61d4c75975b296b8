"""The round driver: one `run-round` from its checks to its summary.

`driver` (the round from start to finish and its Ray start), `dispatch` (scheduling, retries,
faults), `actor` (the Ray actor around a worker), `state` (fingerprint, plan, vetting,
finish), `lock` (one driver per round), `interrupt` (SIGTERM as an interrupt), `progress` (the
driver's bars), `summary` (what a round did), `ray_start` (the one Ray start, shared with
predict).
"""
