-- Forward mix: TCP ACKs of established flows (picked up mid-stream) from
-- PG_FLOWS clients to PG_VIPS VIPs on pktgen's client port; with
-- PG_REPLIES=1 the backend port sends the endpoints' replies (the reverse
-- tuples) at the same time, so sluice carries both directions.
-- Run through scripts/pktgen/run.sh forward; prints RESULT lines.
local pg = dofile((os.getenv("PG_DIR") or ".") .. "/common.lua")

local a, p, n = pg.setup_client(pg.flows, "ack")
local ports = tostring(pg.client_port)
if pg.replies then
  pg.setup_backend(pg.flows)
  ports = ports .. "," .. pg.backend_port
end
print(string.format("forward: %d flows (%d VIPs x %d clients x %d ports), %d-byte frames, rate %s%%, replies %s",
  n, pg.vips, a, p, pg.size, pg.rate, pg.replies and "on" or "off"))
pg.measure("forward", ports)
if os.getenv("PG_QUIT") ~= "0" then pktgen.quit() end
