-- tombstone: keep a rejection the gate decided (max_attempts) so the same call id replays
-- it until its until; a call id that already has a record keeps that record.
-- ARGV[4] = the record (JSON). Returns 1 when stored.
local r = cjson.decode(ARGV[4])
r.u = tonumber(r.u)
r.ra = r.ra and tonumber(r.ra)
if redis.call("EXISTS", P .. "r:" .. rid(r.a, r.i)) == 1 then
  return 0
end
put(r)
return 1
