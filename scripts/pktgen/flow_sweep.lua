-- One point of the flow-count sweep: replays the pcap given to pktgen with
-- -s CLIENT_PORT:FILE (run.sh flows writes one per count with mkpcap.py:
-- PG_FLOWS distinct established flows, one ACK each, replayed in a loop;
-- run.sh syn one of distinct SYNs per rate, labelled by PG_LABEL).
-- Pcap replay, not range mode, because range mode cannot hold more than
-- 24,576 distinct packets per queue.
local pg = dofile((os.getenv("PG_DIR") or ".") .. "/common.lua")

local port = pg.client_port
pg.cli({
  string.format("stop %d", port),
  string.format("disable %d range", port),
  string.format("set %d rate %s", port, pg.rate),
  string.format("enable %d pcap", port),
})
print(string.format("flow sweep point: %d flows from pcap, rate %s%%", pg.flows, pg.rate))
pg.measure(os.getenv("PG_LABEL") or ("flows=" .. pg.flows), tostring(port))
if os.getenv("PG_QUIT") ~= "0" then pktgen.quit() end
