-- acquire: the whole admission step for one call (kernel.acquire).
-- ARGV[4] = the claim (JSON, see redis.py). Returns
-- {kind, position, replay (0/1), {record id, record} or {}, {key, reason, until or ""}...}.
local c = cjson.decode(ARGV[4])

local function verdict(kind, r, blockers, pos, replay)
  local flat = {}
  for _, b in ipairs(blockers) do
    flat[#flat + 1] = b[1]
    flat[#flat + 1] = b[2]
    flat[#flat + 1] = b[3] and fmt(b[3]) or ""
  end
  return {kind, pos, replay and 1 or 0, shown(r), flat}
end

local function replay(r)
  if r.f ~= c.f then
    return verdict("conflict", r, {}, 0, false)
  end
  if r.s == "leased" then
    return verdict("admitted", r, {}, 0, true)
  end
  if r.s == "queued" then
    r.lp = NOW
    put(r)
    local blockers = evaluate(slow().claim_of(r))
    if #blockers == 0 then
      blockers = {{"queue:" .. r.n, "capacity"}}
    end
    return verdict("queued", r, blockers, slow().position(r), true)
  end
  if r.s == "rejected" then
    return verdict("replay", r, {}, 0, true)
  end
  return verdict("ended", r, {}, 0, true)
end

local function main()
  housekeeping()
  local blocked = promote()
  local existing = get(c.a, c.i)
  if existing then
    return replay(existing)
  end
  local blockers, choice = evaluate(c)
  if c.d == "inbound" then
    local ahead = 0
    if queued_numbers()[c.n] and #blockers == 0 then
      ahead = redis.call("ZCOUNT", P .. "q:" .. c.n, "-inf", -c.p)
    end
    if ahead > 0 then
      for _, item in ipairs(blocked) do
        if item[1].n == c.n then
          blockers = item[2]
          break
        end
      end
      if #blockers == 0 then
        blockers = {{"queue:" .. c.n, "capacity"}}
      end
    end
  else
    for _, b in ipairs(inbound_waiting(c, blocked)) do
      blockers[#blockers + 1] = b
    end
  end
  if #blockers == 0 or c.F then
    if #blockers > 0 then
      choice = slow().force_choice(c, choice)
    end
    return verdict("admitted", take(c, choice, nil, false), blockers, 0, false)
  end
  if not c.q then
    return verdict("blocked", nil, blockers, 0, false)
  end
  local r = {a = c.a, i = c.i, s = "queued", f = c.f, n = c.n, d = c.d, p = c.p}
  local queue_len = redis.call("ZCARD", P .. "q:" .. c.n)
  if queue_len >= c.q[1] or c.q[2] <= 0 then
    slow().reject(r, "queue_full", "queue:" .. c.n, nil)
    return verdict("queue_full", r, blockers, 0, false)
  end
  r.c = ARGV[4]
  r.q = redis.call("INCR", P .. "seq")
  r.eq = NOW
  r.lp = NOW
  r.dl = NOW + c.q[2]
  put(r)
  return verdict("queued", r, blockers, slow().position(r), false)
end

local out = main()
flush()
return out
