-- renew: move a live lease's expiry, in one round trip, when no call is queued.
-- A lease's expiry lives only in KEYS[1] (its score there), so this writes no record; a
-- lease's record starts with byte 0xC1 and its TTL and maximum end as two big-endian
-- doubles (stores/codec.py, encode_record).
-- KEYS[1] = P.."due" (leases by expiry, queued calls by deadline, "!q" while any is queued)
-- ARGV: P, now, TTL ("" keeps the lease's), then the record ids to look in, in lookup order.
-- Returns "<n>:<record>" when renewed (n: the place of its id among the ids, from 1; one
-- string, since a table reply costs Redis about a quarter more for the whole script; the
-- gate computes the same expiry from the record); false when the gate must take the full
-- step (stores/kernel.py renew): a call is queued (the step ends what is due and promotes
-- first), the first live record is due or not a lease, the TTL changes, or none is live.
local function renew(KEYS, ARGV)
  local P, now = ARGV[1], tonumber(ARGV[2])
  local expiries = redis.call("ZMSCORE", KEYS[1], "!q", unpack(ARGV, 4))
  if expiries[1] then -- "!q" is in due while any call is queued
    return false
  end
  for i = 4, #ARGV do
    local expiry = expiries[i - 2]
    if expiry then -- live: with nothing queued, a lease
      local text = redis.call("GET", P .. "r:" .. ARGV[i])
      if tonumber(expiry) <= now or string.byte(text) ~= 0xC1 then
        return false
      end
      local ttl, max_end = struct.unpack(">dd", text, 2)
      if ARGV[3] ~= "" and tonumber(ARGV[3]) ~= ttl then
        return false
      end
      redis.call("ZADD", KEYS[1], math.min(now + ttl, max_end), ARGV[i])
      return (i - 3) .. ":" .. text
    end
  end
  return false
end
