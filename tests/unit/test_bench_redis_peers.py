"""What the Redis pairs of make bench read from redis-benchmark, and the key they give it."""

from jobs.bench.pairs import cluster_benchmark_key, redis_benchmark_latencies
from jobs.contracts.redis import Keyspace

# redis-benchmark 7.0's --csv output of one GET test, with a warning before it as it
# prints one when its user may not read the server's CONFIG.
CSV_OUTPUT = """WARNING: Could not fetch server CONFIG
"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"GET batchscore:recs:bench:{tag}","41666.67","0.044","0.016","0.039","0.071","0.127","1.263"

"""


def test_p50_and_p99_are_read_from_the_last_test_row() -> None:
    assert redis_benchmark_latencies(CSV_OUTPUT) == (0.039, 0.127)


def test_the_cluster_key_has_the_tag_redis_benchmark_rewrites_under_the_prefix() -> None:
    assert cluster_benchmark_key(Keyspace()) == "batchscore:recs:bench:{tag}"
    assert cluster_benchmark_key(Keyspace("shop2")) == "shop2:recs:bench:{tag}"
