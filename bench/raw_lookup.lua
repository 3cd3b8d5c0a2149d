-- wrk script: GET /m/raw_lookup?signal_type=pdq&signal=<hash>, the hashes taken in turn from
-- the file named by OMM_BENCH_QUERIES (one per line); each wrk thread starts elsewhere in it.
dofile(os.getenv("OMM_BENCH_LUA_DIR") .. "/wrk_report.lua")
local queries = {}
for line in io.lines(os.getenv("OMM_BENCH_QUERIES")) do
  if #line > 0 then queries[#queries + 1] = line end
end
local threads = 0
function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end
local i = 0
function init(args)
  i = offset or 0
end
function request()
  i = i + 1
  return wrk.format("GET", "/m/raw_lookup?signal_type=pdq&signal=" .. queries[(i % #queries) + 1])
end
function done(summary, latency, requests) report(summary, latency) end
