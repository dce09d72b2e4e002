-- wrk requests over COUNT cached paths, drawn at random per request (bench/scale.py, bench/zipf.py):
--
--   wrk -t1 -c64 -d4s --latency -s bench/zipf.lua URL -- PREFIX COUNT MODE TENANTS SEED
--
-- Each request asks for PREFIX .. string.format("%032x", index), index in 0 .. COUNT - 1, drawn
--   MODE zipf:    by Zipf's law with s = 1 (rank r has weight 1 / r; index = r - 1, so index 0 is the hottest),
--                 by binary search in the cumulative weights computed once in init;
--   MODE uniform: uniformly.
-- TENANTS > 0 adds an X-Tenant header, t0000 .. t(TENANTS - 1), drawn uniformly (TENANTS 1: always t0000).
-- SEED seeds math.random, so two runs draw different streams (a stream replayed from its start would find the
-- gateway's bounded side caches primed by the run before).

local prefix, count, mode, tenants = "", 1, "zipf", 0
local cumulative, total = {}, 0.0
local headers = {}
local floor, random, format = math.floor, math.random, string.format

function init(args)
   prefix = args[1]
   count = tonumber(args[2])
   mode = args[3]
   tenants = tonumber(args[4])
   math.randomseed(tonumber(args[5]))
   if mode == "zipf" then
      for rank = 1, count do
         total = total + 1.0 / rank
         cumulative[rank] = total
      end
   elseif mode ~= "uniform" then
      error("MODE must be zipf or uniform, got " .. tostring(mode))
   end
   for t = 1, tenants do
      headers[t] = { ["X-Tenant"] = format("t%04d", t - 1) }
   end
end

local function draw()
   if mode == "uniform" then
      return random(count) - 1
   end
   local u = random() * total
   local lo, hi = 1, count
   while lo < hi do
      local mid = floor((lo + hi) / 2)
      if cumulative[mid] < u then
         lo = mid + 1
      else
         hi = mid
      end
   end
   return lo - 1
end

function request()
   local extra = nil
   if tenants > 0 then
      extra = headers[random(tenants)]
   end
   return wrk.format("GET", prefix .. format("%032x", draw()), extra)
end
