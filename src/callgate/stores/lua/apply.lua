-- apply: check every guard a step relied on, then make all of its writes, or none.
-- The algorithm ran in the gate (stores/kernel.py); this only applies what it decided.
-- KEYS[1] = P.."used" (the counters hash; every key shares its hash tag)
-- ARGV: five counted sections:
--   n counters: field, delta, bound ("" = none): fails unless used[field] + delta <= bound
--   n guards:   field, value ("" = absent): fails unless used[field] is exactly that value
--               (read in the counters' HMGET: the queues' version, the step lock)
--   n windows:  key, since, added, limit: fails unless ZCOUNT (since..+inf] + added <= limit
--   n expiries: zset, member, score: fails unless ZSCORE zset member is that score
--   n records:  key, expected ("" = absent), new: SET key new (NX, or GET: guard and write
--               in one command), checked last: on a mismatch every record set is put
--               back as it was (records have no TTL), so nothing is written
-- then writes until the end: argc, command, args... (a counter at 0 is deleted), where
-- PURGE, tombs, now, ids..., record keys... forgets each rejection or end past its until
-- unless it was replaced meanwhile (its entry in tombs is then gone or later).
-- Returns 1 when applied, 0 when a guard failed (nothing written: the gate reads again).
-- (Numbers arrive as strings: Lua's arithmetic, `+ 0`, coerces them faster than tonumber.)
local function apply(KEYS, ARGV)
  local call, tonumber, unpack = redis.call, tonumber, unpack
  local n = ARGV[1] + 0
  local g = ARGV[3 * n + 2] + 0
  local fields, counts = {}, {}
  for c = 1, n do fields[c] = ARGV[3 * c - 1] end
  for c = 1, g do fields[n + c] = ARGV[3 * n + 1 + 2 * c] end
  if n + g > 0 then
    counts = call("HMGET", KEYS[1], unpack(fields))
    for c = 1, n do
      local count, bound = (counts[c] or 0) + ARGV[3 * c], ARGV[3 * c + 1]
      if bound ~= "" and count > bound + 0 then return 0 end
      counts[c] = count
    end
    for c = 1, g do
      if (counts[n + c] or "") ~= ARGV[3 * n + 2 + 2 * c] then return 0 end
    end
  end
  local i = 3 * n + 2 * g + 3
  for _ = 1, ARGV[i] + 0 do
    if call("ZCOUNT", ARGV[i + 1], ARGV[i + 2], "+inf") + ARGV[i + 3] > ARGV[i + 4] + 0 then
      return 0
    end
    i = i + 4
  end
  i = i + 1
  for _ = 1, ARGV[i] + 0 do
    if tonumber(call("ZSCORE", ARGV[i + 1], ARGV[i + 2])) ~= ARGV[i + 3] + 0 then
      return 0
    end
    i = i + 3
  end
  i = i + 1
  local records = ARGV[i] + 0
  for r = 1, records do
    local at = i + 3 * r - 2
    local was -- what the key held ("" = absent), or false when SET NX wrote nothing
    if ARGV[at + 1] == "" then
      was = call("SET", ARGV[at], ARGV[at + 2], "NX") and ""
    else
      was = call("SET", ARGV[at], ARGV[at + 2], "GET") or ""
    end
    if was ~= ARGV[at + 1] then -- put back this record and every one set before it
      for back = r, 1, -1 do
        local key, held = ARGV[i + 3 * back - 2], ARGV[i + 3 * back - 1]
        if back == r then held = was end
        if held == "" then call("DEL", key) elseif held then call("SET", key, held) end
      end
      return 0
    end
  end
  i = i + 3 * records
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
      call("HSET", KEYS[1], unpack(set))
    end
    if #gone > 0 then
      call("HDEL", KEYS[1], unpack(gone))
    end
  end
  i = i + 1
  local last = #ARGV
  while i <= last do
    local argc = ARGV[i] + 0
    if ARGV[i + 1] == "PURGE" then
      local k, now, ids, keys = (argc - 3) / 2, ARGV[i + 3] + 0, {}, {}
      local untils = call("ZMSCORE", ARGV[i + 2], unpack(ARGV, i + 4, i + 3 + k))
      for p = 1, k do
        if untils[p] and untils[p] + 0 <= now then
          ids[#ids + 1], keys[#keys + 1] = ARGV[i + 3 + p], ARGV[i + 3 + k + p]
        end
      end
      if #ids > 0 then
        call("DEL", unpack(keys))
        call("ZREM", ARGV[i + 2], unpack(ids))
      end
    else
      call(unpack(ARGV, i + 1, i + argc))
    end
    i = i + argc + 1
  end
  return 1
end
