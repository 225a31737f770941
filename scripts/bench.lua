-- wrk script for scripts/bench.py: POST prepared requests, cycling through them.
-- Usage: wrk ... -s scripts/bench.lua http://host:port -- <folder> <count> <path incl. query> [header ...]
-- Without headers, <folder> holds MNIST test digits 0.png .. and each request is one PNG multipart upload.
-- With headers ("Name: value", e.g. "Content-Type: application/json"), <folder> holds ready request bodies
-- 0.body .. (32 images each for the batched APIs), sent as they are with those headers.
-- Requests are built once in init() (wrk's advice for fast servers); done() prints one JSON line.

local requests_ = {}
local next_ = 1

local function read(name)
  local f = assert(io.open(name, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local folder, count, path = args[1], tonumber(args[2]), args[3]
  local boundary = "----mnistbench7d0a1f"
  local headers = {}
  for i = 4, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  for i = 0, count - 1 do
    local body
    if #args > 3 then
      body = read(folder .. "/" .. i .. ".body")
    else
      body = "--" .. boundary .. "\r\n"
        .. 'Content-Disposition: form-data; name="image"; filename="' .. i .. '.png"\r\n'
        .. "Content-Type: image/png\r\n\r\n"
        .. read(folder .. "/" .. i .. ".png") .. "\r\n--" .. boundary .. "--\r\n"
      headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
    end
    requests_[#requests_ + 1] = wrk.format("POST", path, headers, body)
  end
  -- Threads start at different requests so they do not move in lockstep.
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
