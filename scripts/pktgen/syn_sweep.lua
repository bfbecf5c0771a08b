-- New-flow sweep: TCP SYNs, every packet of a window a new flow as long as
-- the window sends fewer packets than there are tuples (PG_FLOWS, default
-- here 1,000,000 but bounded by range mode's 24,576 distinct packets per
-- queue, see common.lua: beyond that tuples repeat and sluice sees SYNs of
-- flows it already has). One window per rate in PG_SYN_RATES (percent of
-- line rate), so the output shows at which offered SYN rate sluice's
-- forwarded rate stops following.
local pg = dofile((os.getenv("PG_DIR") or ".") .. "/common.lua")

local rates = os.getenv("PG_SYN_RATES") or "1 2 5 10 20 50 100"
local a, p, n = pg.setup_client(tonumber(os.getenv("PG_SYN_FLOWS") or "1000000"), "syn")
print(string.format("syn sweep: %d tuples (%d VIPs x %d clients x %d ports), %d-byte frames",
  n, pg.vips, a, p, pg.size))
for r in rates:gmatch("%S+") do
  pktgen.set(tostring(pg.client_port), "rate", tonumber(r))
  pg.measure("syn rate=" .. r .. "%", tostring(pg.client_port))
end
if os.getenv("PG_QUIT") ~= "0" then pktgen.quit() end
