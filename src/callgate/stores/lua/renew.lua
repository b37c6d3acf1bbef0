-- renew: move a live lease's expiry, in one round trip, when no call is queued.
-- A lease's expiry lives only in KEYS[1] (its score there), so this writes no record.
-- KEYS[1] = P.."due" (leases by expiry, queued calls by deadline)
-- ARGV: P, now, TTL ("" keeps the lease's), then the record ids to look in, in lookup order.
-- Returns {id, record, expiry} when renewed; {} when the gate must take the full step
-- (stores/kernel.py renew): a call is queued (the step expires and promotes first), the
-- first live record is due or not a lease, the TTL changes, or no record is live.
local function renew(KEYS, ARGV)
  local P, now = ARGV[1], tonumber(ARGV[2])
  if redis.call("EXISTS", P .. "qs") == 1 then
    return {}
  end
  for i = 4, #ARGV do
    local expiry = redis.call("ZSCORE", KEYS[1], ARGV[i])
    if expiry then -- live: with nothing queued, a lease
      if tonumber(expiry) <= now then
        return {}
      end
      local text = redis.call("GET", P .. "r:" .. ARGV[i])
      local r = cmsgpack.unpack(text)
      if r.s ~= "leased" or (ARGV[3] ~= "" and tonumber(ARGV[3]) ~= r.t) then
        return {}
      end
      expiry = string.format("%.17g", math.min(now + r.t, r.m))
      redis.call("ZADD", KEYS[1], expiry, ARGV[i])
      return {ARGV[i], text, expiry}
    end
  end
  return {}
end
