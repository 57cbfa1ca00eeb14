"""Configuration compatibility: what a dynamo-base configuration becomes on stock vLLM, release by release.

`mapping.toml` is the table (one entry per key dynamo-base reads, rules per stock release, read by the
schema in `table.py`); `translators.py` holds the value mappings it names; `migrate.py` applies it;
`deployment.py` reads a deployment's file (engine arguments or command line) and says the result per key.
`vpatch config migrate` is the command; docs/migration.md is the table for people.
"""
