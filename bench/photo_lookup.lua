-- wrk script: POST /m/lookup with the JPEG named by OMM_BENCH_PHOTO as multipart field `photo`.
dofile(os.getenv("OMM_BENCH_LUA_DIR") .. "/wrk_report.lua")
local f = assert(io.open(os.getenv("OMM_BENCH_PHOTO"), "rb"))
local jpeg = f:read("*a")
f:close()
local boundary = "ommbenchboundary7d1f3a"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"photo\"; filename=\"photo.jpg\"\r\n"
  .. "Content-Type: image/jpeg\r\n\r\n"
  .. jpeg .. "\r\n--" .. boundary .. "--\r\n"
function done(summary, latency, requests) report(summary, latency) end
