-- apply: check every guard a step relied on, then make all of its writes, or none.
-- The algorithm ran in the gate (stores/kernel.py); this only applies what it decided.
-- KEYS[1] = P.."used" (the counters hash; every key shares its hash tag)
-- ARGV: four counted sections:
--   n counters: field, delta, bound ("" = none): fails unless used[field] + delta <= bound
--   n guards:   key, value ("" = absent): fails unless GET key is exactly that value
--   n windows:  key, since, added, limit: fails unless ZCOUNT (since..+inf] + added <= limit
--   n expiries: zset, member, score: fails unless ZSCORE zset member is that score
-- then writes until the end: argc, command, args... (a counter at 0 is deleted), where
-- the command PURGE, tombs, id, record key, now forgets a rejection or end past its until
-- unless it was replaced meanwhile (its entry in tombs is then gone or later).
-- Returns 1 when applied, 0 when a guard failed (nothing written: the gate reads again).
local function apply(KEYS, ARGV)
  local i = 1
  local n = tonumber(ARGV[i])
  local fields, deltas, bounds = {}, {}, {}
  for c = 1, n do
    fields[c], deltas[c], bounds[c] = ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
    i = i + 3
  end
  local counts = n > 0 and redis.call("HMGET", KEYS[1], unpack(fields)) or {}
  for c = 1, n do
    counts[c] = tonumber(counts[c] or "0") + deltas[c]
    if bounds[c] ~= "" and counts[c] > tonumber(bounds[c]) then
      return 0
    end
  end
  i = i + 1
  for _ = 1, tonumber(ARGV[i]) do
    if (redis.call("GET", ARGV[i + 1]) or "") ~= ARGV[i + 2] then
      return 0
    end
    i = i + 2
  end
  i = i + 1
  for _ = 1, tonumber(ARGV[i]) do
    local seen = redis.call("ZCOUNT", ARGV[i + 1], ARGV[i + 2], "+inf")
    if seen + tonumber(ARGV[i + 3]) > tonumber(ARGV[i + 4]) then
      return 0
    end
    i = i + 4
  end
  i = i + 1
  for _ = 1, tonumber(ARGV[i]) do
    if tonumber(redis.call("ZSCORE", ARGV[i + 1], ARGV[i + 2])) ~= tonumber(ARGV[i + 3]) then
      return 0
    end
    i = i + 3
  end
  if n > 0 then
    local set, gone = {}, {}
    for c = 1, n do
      if counts[c] == 0 then
        gone[#gone + 1] = fields[c]
      else
        set[#set + 1] = fields[c]
        set[#set + 1] = counts[c]
      end
    end
    if #set > 0 then
      redis.call("HSET", KEYS[1], unpack(set))
    end
    if #gone > 0 then
      redis.call("HDEL", KEYS[1], unpack(gone))
    end
  end
  i = i + 1
  while i <= #ARGV do
    local argc = tonumber(ARGV[i])
    if ARGV[i + 1] == "PURGE" then
      local untl = redis.call("ZSCORE", ARGV[i + 2], ARGV[i + 3])
      if untl and tonumber(untl) <= tonumber(ARGV[i + 5]) then
        redis.call("DEL", ARGV[i + 4])
        redis.call("ZREM", ARGV[i + 2], ARGV[i + 3])
      end
    else
      redis.call(unpack(ARGV, i + 1, i + argc))
    end
    i = i + argc + 1
  end
  return 1
end
