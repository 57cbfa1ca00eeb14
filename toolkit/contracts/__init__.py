"""Feature contracts: what a consumer of a feature relies on, written once and judged against any build.

- `kv`: the kv-routing contract (cached prefixes, router overlap, load figures), judged from what the
  project's consumer (`vpatch kv-watch --record`) saw against the engine's own ground truth;
- `pd`: the pd-disagg contract (decode equals aggregated, failure semantics), from the P/D scenarios;
- `run`: `vpatch conform NEW --against OLD`: each side's engine in its own process, publishing on real
  ZMQ sockets, the consumer in another process; results in toolkit/records/contract.py;
- `recorder`: the consumer side of the record (run inside kv-watch).
"""
