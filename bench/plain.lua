-- wrk script: the URL as given (baseline), with the RESULT line of wrk_report.lua.
dofile(os.getenv("OMM_BENCH_LUA_DIR") .. "/wrk_report.lua")
function done(summary, latency, requests) report(summary, latency) end
