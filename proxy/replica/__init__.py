"""What exists only because there are several replicas: the Redis clients and the one Redis failure seam
(`redis_clients`), the circuit breaker over Redis (`breaker`), Redis's clock as this replica sees it (`clock`),
the heartbeat that renews this replica's lease on safe capacity (`heartbeat`), fill leases (`leases`), the notice
bus (`bus`) and the leased flight that makes one fill per key across replicas (`flight`).

Nothing here imports the cache, the read-through flow, the web layer or the composition root; a gateway without
Redis uses none of it.
"""
