-- Shared helpers for the sluice Pktgen-DPDK scripts (forward.lua,
-- syn_sweep.lua, flow_sweep.lua). Loaded with dofile(); every setting comes
-- from an environment variable that scripts/pktgen/run.sh exports, with the
-- defaults below (the lab and bare-metal layout of docs/PKTGEN.md).
--
-- Flow geometry. Pktgen's range mode steps every field by its increment on
-- each packet, all fields at once, wrapping at max. With V VIPs, A client
-- addresses and P client ports the k-th packet is
--   (client_ip[k mod A], client_port[k mod P]) -> (vip[k mod V], 80)
-- and there are lcm(V, A, P) distinct flows. The helpers pick A and P odd
-- and coprime, with V a power of two, so lcm = V * A * P exactly.
-- Range mode builds its packets once, into a mempool of 24,576 mbufs per
-- queue, so it can show at most that many distinct flows; larger counts go
-- through pcap files (run.sh flows).

local M = {}

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end
M.env = env

M.client_port = tonumber(env("PG_CLIENT_PORT", "0"))  -- pktgen port wired to sluice's client side
M.backend_port = tonumber(env("PG_BACKEND_PORT", "1")) -- pktgen port wired to sluice's backend side
M.lb_mac0 = env("PG_LB_MAC0", "02:00:00:00:01:fe")     -- sluice interface 0 (client side)
M.lb_mac1 = env("PG_LB_MAC1", "02:00:00:00:02:fe")     -- sluice interface 1 (backend side)
M.vip_base = env("PG_VIP_BASE", "198.18.0.100")
M.vips = tonumber(env("PG_VIPS", "4"))                 -- VIPs vip_base .. +vips-1, port 80
M.backend_base = env("PG_BACKEND_BASE", "10.200.2.11") -- endpoint of VIP i is backend_base + i, port 8080
M.client_base = env("PG_CLIENT_BASE", "198.19.0.1")
M.size = tonumber(env("PG_SIZE", "64"))
M.rate = tonumber(env("PG_RATE", "100"))               -- percent of line rate
M.duration = tonumber(env("PG_DURATION", "10"))        -- seconds per measured window
M.warmup = tonumber(env("PG_WARMUP", "2"))
M.flows = tonumber(env("PG_FLOWS", "10000"))
M.replies = env("PG_REPLIES", "0") == "1"

local function ip2n(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  assert(a, "not an IPv4 address: " .. tostring(s))
  return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256 + tonumber(d)
end
local function n2ip(n)
  return string.format("%d.%d.%d.%d", (n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)
end
M.ip2n, M.n2ip = ip2n, n2ip

local function gcd(a, b)
  while b ~= 0 do a, b = b, a % b end
  return a
end

-- Client addresses A and ports P for about `flows` flows over M.vips VIPs:
-- A and P odd and coprime, P at most 60,000 (ports 1024-61023).
function M.geometry(flows)
  local per_vip = math.max(1, math.ceil(flows / M.vips))
  local a = math.max(1, math.ceil(per_vip / 60000))
  if a % 2 == 0 then a = a + 1 end
  local p = math.max(1, math.ceil(per_vip / a))
  if p % 2 == 0 then p = p + 1 end
  while gcd(a, p) ~= 1 do p = p + 2 end
  return a, p, M.vips * a * p
end

-- Run CLI commands (the .pkt language) from Lua: pktgen's Lua API has no
-- call for every setting (TCP flags in range mode, for one).
function M.cli(lines)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  pktgen.load(path)
  os.remove(path)
end

local function range_field(lines, port, field, start, inc, min, max)
  for _, kv in ipairs({ { "start", start }, { "inc", inc }, { "min", min }, { "max", max } }) do
    lines[#lines + 1] = string.format("range %d %s %s %s", port, field, kv[1], kv[2])
  end
end

-- Range mode on `port`: TCP frames to `mac` with TCP flag `flag`, each
-- field of `fields` ({name, start, inc, min, max}) stepped by range_field,
-- at the configured size and rate.
local function setup_range(port, mac, flag, fields)
  local l = {
    string.format("stop %d", port),
    string.format("disable %d pcap", port),
    string.format("range %d proto tcp", port),
    string.format("range %d dst mac start %s", port, mac),
    string.format("range %d tcp flag clr all", port),
    string.format("range %d tcp flag set %s", port, flag),
  }
  for _, f in ipairs(fields) do
    range_field(l, port, f[1], f[2], f[3], f[4], f[5])
  end
  range_field(l, port, "size", M.size, 0, M.size, M.size)
  l[#l + 1] = string.format("set %d rate %s", port, M.rate)
  l[#l + 1] = string.format("enable %d range", port)
  M.cli(l)
end

-- Client side: TCP from A x P clients to the VIPs, port 80, with `flag`
-- ("ack": established flows, picked up mid-stream; "syn": new flows).
function M.setup_client(flows, flag)
  local a, p, n = M.geometry(flows)
  local c0, v0 = ip2n(M.client_base), ip2n(M.vip_base)
  setup_range(M.client_port, M.lb_mac0, flag, {
    { "dst ip", n2ip(v0), "0.0.0.1", n2ip(v0), n2ip(v0 + M.vips - 1) },
    { "src ip", n2ip(c0), "0.0.0.1", n2ip(c0), n2ip(c0 + a - 1) },
    { "dst port", 80, 0, 80, 80 },
    { "src port", 1024, 1, 1024, 1024 + p - 1 },
  })
  return a, p, n
end

-- Backend side: the endpoints' replies, the exact reverse of setup_client's
-- tuples in the same order (endpoint i answers VIP i: one endpoint per VIP,
-- as config/pktgen.toml has it), TCP ACK from port 8080.
function M.setup_backend(flows)
  local a, p, n = M.geometry(flows)
  local c0, b0 = ip2n(M.client_base), ip2n(M.backend_base)
  setup_range(M.backend_port, M.lb_mac1, "ack", {
    { "src ip", n2ip(b0), "0.0.0.1", n2ip(b0), n2ip(b0 + M.vips - 1) },
    { "dst ip", n2ip(c0), "0.0.0.1", n2ip(c0), n2ip(c0 + a - 1) },
    { "src port", 8080, 0, 8080, 8080 },
    { "dst port", 1024, 1, 1024, 1024 + p - 1 },
  })
  return n
end

local function totals()
  local s = pktgen.portStats("all", "port")
  local t = {}
  for pid = 0, pktgen.portCount() - 1 do
    local x = s[pid] or {}
    t[pid] = { rx = x.ipackets or 0, tx = x.opackets or 0, miss = x.imissed or 0,
      nombuf = x.rx_nombuf or 0, oerr = x.oerrors or 0 }
  end
  return t
end

-- Send on `ports` (a port list string, e.g. "0" or "0,1") for warmup +
-- duration seconds; print one line per port with the packets per second
-- sent and received over the measured window (port counters, so the
-- measure does not depend on pktgen's screen refresh).
function M.measure(label, ports)
  pktgen.clear("all")
  pktgen.start(ports)
  pktgen.delay(M.warmup * 1000)
  local c0 = totals()
  pktgen.delay(M.duration * 1000)
  local c1 = totals()
  pktgen.stop(ports)
  pktgen.delay(500)
  local secs = M.duration
  local out = {}
  for pid = 0, pktgen.portCount() - 1 do
    local tx = (c1[pid].tx - c0[pid].tx) / secs
    local rx = (c1[pid].rx - c0[pid].rx) / secs
    out[pid] = { tx = tx, rx = rx }
    print(string.format("RESULT %s port=%d tx_pps=%.0f rx_pps=%.0f tx_total=%d rx_total=%d rx_missed=%d rx_nombuf=%d tx_errors=%d window_s=%d",
      label, pid, tx, rx, c1[pid].tx, c1[pid].rx, c1[pid].miss, c1[pid].nombuf, c1[pid].oerr, secs))
  end
  io.stdout:flush()
  return out
end

return M
