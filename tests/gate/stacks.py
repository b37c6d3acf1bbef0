"""Small stacks for behavioural tests, each built so one layer is easy to fill."""

BASE = """
[gate]
lease_ttl = "30s"
max_call_duration = "1h"
poll_timeout = "30s"
tombstone_ttl = "60s"

[trunks.t1]
max_concurrent = 4

[plans.small]
max_concurrent = 3

[accounts.acme]
plan = "small"

[numbers."+15550000001"]
account = "acme"
trunk = "t1"
max_concurrent = 2

[numbers."+15550000002"]
account = "acme"
trunk = "t1"
max_concurrent = 2

[providers.llm]
keys = ["k1", "k2"]
sessions_per_key = 2
cooldown = "20s"

[inbound]
queue_max = 3
max_wait = "2m"
retry_after = "5m"
handle_time = "3m"

[outbound]
retry_base = "10s"
retry_max = "60s"
jitter = "none"
max_attempts = 3
"""

N1 = "+15550000001"
N2 = "+15550000002"


def with_(extra: str, base: str = BASE) -> str:
    """``base`` with some tables replaced or added (later TOML tables must be new)."""
    return base + "\n" + extra
