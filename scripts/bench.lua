-- wrk script for scripts/bench.py: POST MNIST test digits as PNG multipart uploads, cycling through them.
-- Usage: wrk ... -s scripts/bench.lua http://host:port -- <png folder> <count> <path incl. query>
-- Requests are built once in init() (wrk's advice for fast servers); done() prints one JSON line.

local requests_ = {}
local next_ = 1

function init(args)
  local folder, count, path = args[1], tonumber(args[2]), args[3]
  local boundary = "----mnistbench7d0a1f"
  for i = 0, count - 1 do
    local f = assert(io.open(folder .. "/" .. i .. ".png", "rb"))
    local png = f:read("*a")
    f:close()
    local body = "--" .. boundary .. "\r\n"
      .. 'Content-Disposition: form-data; name="image"; filename="' .. i .. '.png"\r\n'
      .. "Content-Type: image/png\r\n\r\n"
      .. png .. "\r\n--" .. boundary .. "--\r\n"
    local headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
    requests_[#requests_ + 1] = wrk.format("POST", path, headers, body)
  end
  -- Threads start at different digits so they do not move in lockstep.
  next_ = (tonumber(tostring(wrk.thread):match("0x(%x+)"), 16) or 0) % #requests_ + 1
end

function request()
  local r = requests_[next_]
  next_ = next_ % #requests_ + 1
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"duration_us": %d, "requests": %d, "http_errors": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"mean_us": %.1f}\n',
    summary.duration, summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
