-- callgate: helpers shared by every primitive, prepended to each script at load time.
--
-- The admission algorithm of callgate/stores/kernel.py, over Redis structures. Every key
-- starts with the sharing domain's prefix P (e.g. "{callgate}:"), whose hash tag puts
-- them all in one cluster slot:
--   P.."limits"   hash   poll/tomb/ended timers, accounts (JSON list), v (a digest of what
--                        the gate configured, with the caps)
--   P.."caps"     hash   <key> -> cap; <window key> -> "limit period"
--   P.."used"     hash   <key> -> slots in use (fields at zero are deleted), and
--                        "#leases" -> how many leases are held, "#expired" -> how many
--                        leases expired unreleased
--   P.."r:"..id   string one call's record (MessagePack: times are exact binary doubles)
--   P.."due"      zset   every record by when it is next due: a lease by its expiry, a
--                        queued call by its deadline, a rejection or end by its until
--   P.."q:"..n    zset   one queue per number: score -priority, member %016d(seq)..id
--   P.."qs"       set    numbers whose queue is not empty
--   P.."qpoll"    zset   queued calls by last poll
--   P.."w:"..key  zset   a window's admissions by time (member: a sequence number)
--   P.."cool"     hash   "provider:<name>:<alias>" -> until ("inf": disabled until reload)
--   P.."seq"      string the sequence counter (queue arrival order, window members)
-- where id = #account..":"..account..":"..call_id.
--
-- A lease's record keeps the slots it holds compactly: "key" for one unit, {key, units}
-- for more, and for each provider group only its key slot "provider:<name>:<alias>" (the
-- pool "provider:<name>" is implied, and so is the alias chosen).
--
-- ARGV[1] = P, ARGV[2] = digest of the limits the caller configured, ARGV[3] = now
-- (the gate's clock, epoch seconds, as Python's repr of the float: exact, and used as a
-- score as it is; scripts never read Redis TIME). A script whose limits hash is missing or
-- was written from other limits answers CALLGATE_STALE and the caller rewrites it and
-- runs the script again.
--
-- Speed: Redis runs this prelude on every call, and creating a closure costs more the
-- more locals it captures, so the helpers a plain admission or release never needs (the
-- queue, promotion and shadow machinery) are built on first use by slow(). Caps and
-- counters are read in batches with HMGET, and only those a step needs.

local P = ARGV[1]
local NOW = tonumber(ARGV[3])
local NOW_S = ARGV[3]
local K_LIMITS = KEYS[1]
local K_CAPS = P .. "caps"
local K_USED = P .. "used"
local K_DUE = P .. "due"
local K_QS = P .. "qs"
local K_QPOLL = P .. "qpoll"
local K_COOL = P .. "cool"

local HEAD = redis.call("HMGET", K_LIMITS, "v", "poll", "tomb", "ended", "accounts")
if HEAD[1] ~= ARGV[2] then
  return redis.error_reply("CALLGATE_STALE limits not configured by this gate")
end

local function fmt(x)
  return string.format("%.17g", x)
end

-- limits and counters ----------------------------------------------------------------------
local POLL, TOMB, ENDED = tonumber(HEAD[2]), tonumber(HEAD[3]), tonumber(HEAD[4])

-- Caps, window specs and counters are read in batches and cached for the script (a cap
-- or spec the stack does not have is cached as false); counters are written once, by
-- flush(), which every primitive calls before it returns.
local caps, windows, used, dirty = {}, {}, {}, {}

-- Read the caps of keys and the specs of window keys wkeys not yet read (HMGET answers
-- a field asked twice twice: no need to remove duplicates).
-- Append to want (holding n keys) the keys of list not yet in cache; the new count.
local function unread(list, cache, want, n)
  for i = 1, #list do
    local key = list[i]
    if cache[key] == nil then
      n = n + 1
      want[n] = key
    end
  end
  return n
end

local function fetch_caps(keys, wkeys)
  local want = {}
  local nslots = unread(keys, caps, want, 0)
  local n = unread(wkeys, windows, want, nslots)
  if n == 0 then
    return
  end
  local values = redis.call("HMGET", K_CAPS, unpack(want, 1, n))
  for i = 1, nslots do
    local v = values[i]
    caps[want[i]] = v and tonumber(v) or false
  end
  for i = nslots + 1, n do
    local v = values[i]
    if v then
      local limit, period = string.match(v, "^(%S+) (%S+)$")
      v = {tonumber(limit), tonumber(period)}
    end
    windows[want[i]] = v
  end
end

-- Read the counters of keys not yet read.
local function fetch_used(keys)
  local want = {}
  local n = unread(keys, used, want, 0)
  if n == 0 then
    return
  end
  local counts = redis.call("HMGET", K_USED, unpack(want, 1, n))
  for i = 1, n do
    used[want[i]] = tonumber(counts[i] or "0")
  end
end

local NONE = {}

local function cap_of(key)
  local cap = caps[key]
  if cap == nil then
    fetch_caps({key}, NONE)
    cap = caps[key]
  end
  return cap or nil
end

local function window_of(key)
  local spec = windows[key]
  if spec == nil then
    fetch_caps(NONE, {key})
    spec = windows[key]
  end
  return spec or nil
end

local function in_use(key)
  local u = used[key]
  if u == nil then
    fetch_used({key})
    u = used[key]
  end
  return u
end

local function add(key, delta)
  local u = used[key]
  if u == nil then
    u = in_use(key)
  end
  used[key] = u + delta
  dirty[key] = true
end

local function flush()
  local set, gone, ns, ng = {}, {}, 0, 0
  for key in pairs(dirty) do
    local v = used[key]
    if v == 0 then
      ng = ng + 1
      gone[ng] = key
    else
      set[ns + 1] = key
      set[ns + 2] = v
      ns = ns + 2
    end
  end
  if ns > 0 then
    redis.call("HSET", K_USED, unpack(set, 1, ns))
  end
  if ng > 0 then
    redis.call("HDEL", K_USED, unpack(gone, 1, ng))
  end
  dirty = {}
end

-- The pool of a provider key slot "provider:<name>:<alias>", or nil for any other key.
local function pool_of(key)
  if string.sub(key, 1, 9) == "provider:" then
    return string.match(key, "^(.*):[^:]*$")
  end
  return nil
end

-- windows and cooldowns ------------------------------------------------------------------
-- Events are kept PRUNE_MARGIN seconds longer than their window needs: gates read their
-- clocks before their scripts run, so a script may run after one whose now was later. A
-- late-running script with an earlier now still finds every event it must count, as long
-- as the gates' clocks disagree by less than the margin.
local PRUNE_MARGIN = 2

-- Admissions logged under key after since.
local function count_since(key, since)
  return redis.call("ZCOUNT", P .. "w:" .. key, "(" .. fmt(since), "+inf")
end

-- Log an admission and drop the events that no window can count any more.
local function log_event(key)
  local zkey = P .. "w:" .. key
  redis.call("ZADD", zkey, NOW_S, redis.call("INCR", P .. "seq"))
  local spec = window_of(key)
  if spec ~= nil then  -- every time: a sampled prune can miss a key for ever
    redis.call("ZREMRANGEBYSCORE", zkey, "-inf", fmt(NOW - spec[2] - PRUNE_MARGIN))
  end
end

local cooling = nil
local function cooldown_until(key_slot)
  if cooling == nil then
    cooling = {}
    local flat = redis.call("HGETALL", K_COOL)
    for i = 1, #flat, 2 do
      cooling[flat[i]] = tonumber(flat[i + 1])
    end
  end
  return cooling[key_slot]
end

-- records --------------------------------------------------------------------------------
local function rid(account, call_id)
  return #account .. ":" .. account .. ":" .. call_id
end

local PREV = {}     -- the state each record was last stored in
local ENCODED = {}  -- a record's MessagePack as last stored

-- A record as stored: MessagePack (times as exact binary doubles), without the account
-- and call id (they are in its key) and defaults (priority 0, not promoted).
local function encode(r)
  local a, i, p, pr = r.a, r.i, r.p, r.pr
  r.a, r.i = nil, nil
  if p == 0 then
    r.p = nil
  end
  if not pr then
    r.pr = nil
  end
  local text = cmsgpack.pack(r)
  r.a, r.i, r.p, r.pr = a, i, p, pr
  return text
end

local function decode(text, id)
  local r = cmsgpack.unpack(text)
  local n, rest = string.match(id, "^(%d+):(.*)$")
  n = tonumber(n)
  r.a, r.i = string.sub(rest, 1, n), string.sub(rest, n + 2)
  r.p = r.p or 0
  PREV[r] = r.s
  ENCODED[r] = text
  return r
end

local function load(id)
  local text = redis.call("GET", P .. "r:" .. id)
  if not text then
    return nil
  end
  return decode(text, id)
end

local function get(account, call_id)
  if account then
    return load(rid(account, call_id))
  end
  -- Ordering rule 1 of base.py: a live lease or queue entry first (another account's
  -- tombstone of the same id must not hide it), else the first account in config order.
  local first = nil
  for _, name in ipairs(cjson.decode(HEAD[5])) do
    local r = load(rid(name, call_id))
    if r then
      if r.s == "leased" or r.s == "queued" then
        return r
      end
      first = first or r
    end
  end
  return first
end

local function qmember(r)
  return string.format("%016d", r.q) .. rid(r.a, r.i)
end

-- The numbers whose queue is not empty, read once per script and kept in step by put().
local queues = nil
local function queued_numbers()
  if queues == nil then
    queues = {}
    for _, number in ipairs(redis.call("SMEMBERS", K_QS)) do
      queues[number] = true
    end
  end
  return queues
end

local function put(r)
  local id = rid(r.a, r.i)
  local prev, s = PREV[r], r.s
  if prev == "leased" and s ~= "leased" then
    add("#leases", -1)
  elseif s == "leased" and prev ~= "leased" then
    add("#leases", 1)
  end
  if s == "leased" then
    redis.call("ZADD", K_DUE, fmt(r.e), id)
  elseif s == "rejected" or s == "ended" then
    redis.call("ZADD", K_DUE, fmt(r.u), id)
  end
  if prev == "queued" and s ~= "queued" then
    local qkey = P .. "q:" .. r.n
    redis.call("ZREM", qkey, qmember(r))
    if redis.call("EXISTS", qkey) == 0 then
      redis.call("SREM", K_QS, r.n)
      queued_numbers()[r.n] = nil
    end
    redis.call("ZREM", K_QPOLL, id)
  end
  if s == "queued" then
    if prev ~= "queued" then
      redis.call("ZADD", P .. "q:" .. r.n, -r.p, qmember(r))
      redis.call("SADD", K_QS, r.n)
      queued_numbers()[r.n] = true
      redis.call("ZADD", K_DUE, fmt(r.dl), id)
    end
    redis.call("ZADD", K_QPOLL, fmt(r.lp), id)
  end
  local text = encode(r)
  redis.call("SET", P .. "r:" .. id, text)
  PREV[r] = s
  ENCODED[r] = text
end

-- The helpers of queues, promotion and shadow mode, built on first use (see above).
local SLOW, build_slow = nil, nil
local function slow()
  if SLOW == nil then
    SLOW = build_slow()
  end
  return SLOW
end

-- the algorithm (kernel.py) --------------------------------------------------------------
local function end_lease(r, how)
  local held = r.h or NONE
  local keys, n = {}, 0
  for i = 1, #held do
    local h = held[i]
    local key = type(h) == "table" and h[1] or h
    n = n + 1
    keys[n] = key
    local pool = pool_of(key)
    if pool then
      n = n + 1
      keys[n] = pool
    end
  end
  fetch_used(keys)
  for i = 1, #held do
    local h = held[i]
    local key, units = h, 1
    if type(h) == "table" then
      key, units = h[1], h[2]
    end
    add(key, -units)
    local pool = pool_of(key)
    if pool then
      add(pool, -1)
    end
  end
  r.s = "ended"
  r.eb = how
  r.u = NOW + ENDED
  r.h = nil
  put(r)
end

-- Expire due leases, reject queued calls past their deadline or poll timeout, forget
-- rejections and ends past their until; returns how many leases expired.
local function housekeeping()
  local expired = 0
  local due = redis.call("ZRANGEBYSCORE", K_DUE, "-inf", NOW_S)
  if next(queued_numbers()) ~= nil then
    -- Candidates by last poll, with a millisecond of slack; the exact test is below.
    for _, id in ipairs(redis.call("ZRANGEBYSCORE", K_QPOLL, "-inf", fmt(NOW - POLL + 0.001))) do
      due[#due + 1] = id
    end
  end
  if #due == 0 then
    return 0
  end
  local seen = {}
  for _, id in ipairs(due) do
    if not seen[id] then
      seen[id] = true
      local r = load(id)
      if r == nil then
        redis.call("ZREM", K_DUE, id)
      elseif r.s == "leased" then
        if r.e <= NOW then
          end_lease(r, "expired")
          expired = expired + 1
        end
      elseif r.s == "queued" then
        if r.dl <= NOW or r.lp + POLL <= NOW then
          slow().reject(r, "queue_timeout", "queue:" .. r.n, nil)
        end
      elseif r.u <= NOW then
        redis.call("DEL", P .. "r:" .. id)
        redis.call("ZREM", K_DUE, id)
      end
    end
  end
  if expired > 0 then
    add("#expired", expired)  -- counted in the store: every gate reports the same total
  end
  return expired
end

-- Every reason claim c cannot be taken now ({key, reason, until}), and the key chosen
-- in each provider group (its index in the group).
local function evaluate(c)
  fetch_caps(c.k, c.w)
  fetch_used(c.k)
  local blockers = {}
  for _, slot in ipairs(c.s) do
    local key, units, reserve = slot[1], slot[2], slot[3]
    local cap = caps[key]
    if cap then
      local u = used[key]
      if u + units + reserve > cap then
        local reserved = reserve > 0 and u + units <= cap
        blockers[#blockers + 1] = {key, reserved and "reserved_inbound" or "capacity"}
      end
    end
  end
  for _, key in ipairs(c.w) do
    local spec = windows[key]
    if spec then
      local limit, period = spec[1], spec[2]
      local count = count_since(key, NOW - period)
      if count + 1 > limit then
        -- The window has room again once enough of its oldest events have left it.
        local leaves = slow().nth_since(key, NOW - period, count - limit) + period
        blockers[#blockers + 1] = {key, "rate_window", leaves}
      end
    end
  end
  local choice = {}
  for _, g in ipairs(c.g) do
    local provider, pool, slots = g[1], g[2], g[4]
    local pool_cap = caps[pool]
    if pool_cap and used[pool] + 1 > pool_cap then
      blockers[#blockers + 1] = {pool, "capacity"}
    else
      local best, best_room = nil, 0
      local cooled, earliest = 0, nil
      for index, key in ipairs(slots) do
        local untl = cooldown_until(key)
        if untl ~= nil and untl > NOW then
          cooled = cooled + 1
          if earliest == nil or untl < earliest then
            earliest = untl
          end
        else
          local room = (caps[key] or 0) - used[key]
          if room >= 1 and (best == nil or room > best_room) then
            best, best_room = index, room
          end
        end
      end
      if best ~= nil then
        choice[provider] = best
      elseif cooled == #slots then
        blockers[#blockers + 1] = {pool, "provider_cooldown", earliest}
      else
        blockers[#blockers + 1] = {pool, "capacity"}
      end
    end
  end
  return blockers, choice
end

local function take(c, choice, r, promoted)
  local held, n = {}, 0
  for _, slot in ipairs(c.s) do
    local key, units = slot[1], slot[2]
    add(key, units)
    n = n + 1
    held[n] = units == 1 and key or {key, units}
  end
  for _, g in ipairs(c.g) do
    local key = g[4][choice[g[1]]]
    add(g[2], 1)
    add(key, 1)
    n = n + 1
    held[n] = key
  end
  for _, key in ipairs(c.w) do
    if window_of(key) ~= nil then  -- the windows the stack has now (kernel.take)
      log_event(key)
    end
  end
  if r == nil then
    r = {a = c.a, i = c.i, f = c.f, n = c.n, d = c.d, p = c.p}
  end
  r.s = "leased"
  r.h = held
  r.at = NOW
  r.m = NOW + c.x
  r.t = c.t
  r.e = math.min(NOW + (c.T or c.t), r.m)
  r.pr = promoted
  r.c, r.eq, r.dl, r.lp = nil, nil, nil, nil
  put(r)
  return r
end

-- Admit every queue head that fits, in (priority, arrival) order; return the rest
-- as {record, blockers}.
local function promote()
  if next(queued_numbers()) == nil then
    return {}
  end
  return slow().promote()
end

-- Scopes where outbound claim c would take room that a waiting inbound head needs.
local function inbound_waiting(c, blocked)
  if #blocked == 0 then
    return {}
  end
  return slow().inbound_waiting(c, blocked)
end

local function expire_and_promote()
  local expired = housekeeping()
  promote()
  return expired
end

-- The record as the caller reads it: its id and its last stored MessagePack.
local function shown(r)
  if r == nil then
    return {}
  end
  return {rid(r.a, r.i), ENCODED[r] or encode(r)}
end

build_slow = function()
  local S = {}

  -- The time of the n-th (0-based, oldest first) admission after since.
  function S.nth_since(key, since, n)
    local row = redis.call("ZRANGEBYSCORE", P .. "w:" .. key, "(" .. fmt(since), "+inf",
                           "WITHSCORES", "LIMIT", n, 1)
    return tonumber(row[2])
  end

  function S.reject(r, reason, key, retry_after)
    r.s = "rejected"
    r.r = reason
    r.b = key
    r.ra = retry_after
    r.u = NOW + TOMB
    r.c = nil
    put(r)
  end

  local CLAIMS = {}  -- decoded claims of queued records
  function S.claim_of(r)
    local c = CLAIMS[r]
    if c == nil then
      c = cjson.decode(r.c)
      CLAIMS[r] = c
    end
    return c
  end
  local claim_of = S.claim_of

  -- Shadow mode: a key for every group even when all are full (most headroom wins).
  function S.force_choice(c, choice)
    for _, g in ipairs(c.g) do
      if choice[g[1]] == nil then
        local best, best_room = nil, nil
        for index, key in ipairs(g[4]) do
          local room = (cap_of(key) or 0) - in_use(key)
          if best == nil or room > best_room then
            best, best_room = index, room
          end
        end
        choice[g[1]] = best
      end
    end
    return choice
  end

  local function queue_head(number)
    local first = redis.call("ZRANGE", P .. "q:" .. number, 0, 0)
    if first[1] then
      return load(string.sub(first[1], 17))
    end
    return nil
  end

  local function by_priority_then_arrival(a, b)
    if a.p ~= b.p then
      return a.p > b.p
    end
    return a.q < b.q
  end

  -- Ordering rule 3 of stores/base.py (kernel.promote): the best head first; a promoted
  -- head's successor joins the heads at its own place; a head that does not fit is
  -- passed over, and nothing behind it is tried in this step.
  function S.promote()
    local heads = {}
    for number in pairs(queued_numbers()) do
      local r = queue_head(number)
      if r then
        heads[#heads + 1] = r
      end
    end
    table.sort(heads, by_priority_then_arrival)
    local blocked = {}
    while #heads > 0 do
      local head = table.remove(heads, 1)
      local c = claim_of(head)
      local blockers, choice = evaluate(c)
      if #blockers > 0 then
        blocked[#blocked + 1] = {head, blockers}
      else
        take(c, choice, head, true)
        local behind = queue_head(head.n)
        if behind then
          local at = 1
          while at <= #heads and by_priority_then_arrival(heads[at], behind) do
            at = at + 1
          end
          table.insert(heads, at, behind)
        end
      end
    end
    return blocked
  end

  function S.inbound_waiting(c, blocked)
    local found = {}
    local mine, my_pools = {}, {}
    for _, slot in ipairs(c.s) do
      mine[slot[1]] = slot[2]
    end
    for _, g in ipairs(c.g) do
      my_pools[g[1]] = true
    end
    local demand, order, pools = {}, {}, {}
    local function want(key, n)
      if demand[key] == nil then
        demand[key] = 0
        order[#order + 1] = key
      end
      demand[key] = demand[key] + n
    end
    for _, item in ipairs(blocked) do
      local hc = claim_of(item[1])
      for _, slot in ipairs(hc.s) do
        if mine[slot[1]] ~= nil then
          want(slot[1], slot[2] + slot[3])
        end
      end
      for _, g in ipairs(hc.g) do
        if my_pools[g[1]] then
          want(g[2], 1)
          pools[g[2]] = g
        end
      end
    end
    for _, key in ipairs(order) do
      local wanted = demand[key]
      local g = pools[key]
      if g ~= nil then
        local free = 0
        for _, k in ipairs(g[4]) do
          if (cooldown_until(k) or 0) <= NOW then
            free = free + math.max(0, (cap_of(k) or 0) - in_use(k))
          end
        end
        local pool_cap = cap_of(key)
        if pool_cap ~= nil then
          free = math.min(free, pool_cap - in_use(key))
        end
        if free - 1 < wanted then
          found[#found + 1] = {key, "inbound_waiting"}
        end
      else
        local cap = cap_of(key)
        if cap ~= nil and in_use(key) + mine[key] + wanted > cap then
          found[#found + 1] = {key, "inbound_waiting"}
        end
      end
    end
    return found
  end

  function S.position(r)
    local rank = redis.call("ZRANK", P .. "q:" .. r.n, qmember(r))
    return rank and rank + 1 or 0
  end

  return S
end
