"""Reference pipelines: runnable with `python -m onceproof.targets.pipelines.<name>`, configured only by the
pipeline contract's environment (see DESIGN.md, "Pipeline contract").

| name | source -> sink | guarantee |
|---|---|---|
| kafka_to_postgres | Kafka -> PostgreSQL | exactly once (effects + offsets in one transaction, fenced by compare-and-set) |
| kafka_txn_copy | Kafka -> Kafka | exactly once (Kafka transactions, offsets sent with the group's metadata) |
| at_least_once | Kafka -> PostgreSQL | at least once: write, then commit offsets (duplicates under kills) |
| commit_before_process | Kafka -> PostgreSQL | at most once: commit offsets, then write (losses under kills) |

Each replica exits only on a bad configuration (code 2); every other error is logged to stderr and
retried.
"""
