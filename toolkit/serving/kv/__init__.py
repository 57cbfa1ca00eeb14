"""Reference consumer of the KV-cache events vLLM engines publish (docs/kv-events.md).

- `wire`: every encoding (dynamo-base maps, upstream arrays, upstream tagged maps) into one model.
- `index`: `KVIndex`, per-worker reference-counted cached blocks and load metrics.
- `subscriber`: `Subscriber`, follows one engine's stream with replay, restart and late-join detection.
- `router`: `Router`, longest cached prefix weighed against load.
- `hashes`: content keys and vLLM 0.8.4's block hashes, recomputed without vLLM.
"""
