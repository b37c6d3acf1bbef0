-- cooldown: skip a provider key until a moment ("inf": until the next reload).
-- ARGV[4] = "provider:<name>:<alias>", ARGV[5] = until (epoch seconds or "inf").
redis.call("HSET", K_COOL, ARGV[4], ARGV[5])
return 1
