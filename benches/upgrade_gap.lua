-- wrk script for benches/upgrade.sh (run with -H 'Connection: close': a
-- new connection per request): the longest time between two completed 2xx
-- responses, read from CLOCK_MONOTONIC (wrk's Lua has no finer clock than
-- a second without the FFI). Run it with one thread (-t 1): the gap is the
-- thread's. done() prints one line: "gap <ms> at <s> completed <n>", the
-- gap's end counted from the first completion.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } upgrade_timespec;
int clock_gettime(int clock, upgrade_timespec *now);
]]
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("upgrade_timespec")

local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
    return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

first, last, gap, gap_end, completed = 0, 0, 0, 0, 0

function response(status, headers, body)
    if status < 200 or status > 299 then
        return
    end
    local t = now_ms()
    if completed == 0 then
        first = t
    elseif t - last > gap then
        gap, gap_end = t - last, t - first
    end
    last, completed = t, completed + 1
end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function done(summary, latency, requests)
    for _, thread in ipairs(threads) do
        io.write(string.format("gap %.1f at %.3f completed %d\n",
            thread:get("gap"), thread:get("gap_end") / 1000, thread:get("completed")))
    end
end
