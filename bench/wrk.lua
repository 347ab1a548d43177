-- wrk script for bench/run.py: POST one JSON body; with a token file, each request carries
-- the next pre-signed bearer token (a jti is accepted once, so tokens are never reused on
-- purpose; when they run out they wrap around, the server answers 401, and run.py sees
-- non-2xx responses and measures again with more tokens).
--   wrk -t1 -c8 -d10s -s bench/wrk.lua URL -- BODY_FILE [TOKEN_FILE]
-- done() prints one line "JSON {...}" for run.py to read.

local body, tokens, plain, n = nil, {}, nil, 0

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

function init(args)
  body = slurp(args[1])
  if args[2] then
    for line in io.lines(args[2]) do
      tokens[#tokens + 1] = line
    end
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = body
  plain = wrk.format()
end

function request()
  if #tokens == 0 then
    return plain
  end
  n = n + 1
  local token = tokens[(n - 1) % #tokens + 1]
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. token }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
