-- renew: move a live lease's expiry, in one round trip, when nothing else is due.
-- KEYS[1] = P.."due" (leases by expiry, queued calls by deadline)
-- ARGV: P, now, TTL ("" keeps the lease's), then the record ids to look in, in lookup order.
-- Returns {id, record} when renewed; {} when the gate must take the full step instead (a
-- call is queued or something is due, so the step would expire or promote first; or the
-- first live record is not a lease; or there is none).
local function renew(KEYS, ARGV)
  local P, now = ARGV[1], tonumber(ARGV[2])
  if redis.call("EXISTS", P .. "qs") == 1
      or #redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[2], "LIMIT", 0, 1) > 0 then
    return {}
  end
  for i = 4, #ARGV do
    local key = P .. "r:" .. ARGV[i]
    local text = redis.call("GET", key)
    if text then
      local r = cmsgpack.unpack(text)
      if r.s == "queued" then
        return {}
      end
      if r.s == "leased" then
        local ttl = tonumber(ARGV[3])
        if ttl ~= nil and ttl ~= 0 then
          r.t = ttl
        end
        r.e = math.min(now + r.t, r.m)
        text = cmsgpack.pack(r)
        redis.call("SET", key, text)
        redis.call("ZADD", KEYS[1], string.format("%.17g", r.e), ARGV[i])
        return {ARGV[i], text}
      end
    end
  end
  return {}
end
