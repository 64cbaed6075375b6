-- Serves the merged OpenAPI document (openapi.json, next to this file) from
-- memory: `http-request use-service lua.openapi`. The document is read once,
-- when HAProxy loads its configuration (relative paths resolve against the
-- configuration's directory then, see `default-path config`), so a request
-- never touches the disk. HAProxy's own `return` action cannot serve it:
-- its body must fit one buffer (16 KiB), and the document is larger.

local function read_document()
  local file = assert(io.open("openapi.json", "rb"), "gateway/openapi.json is missing")
  local body = file:read("a")
  file:close()
  assert(#body > 0, "gateway/openapi.json is empty")
  return body
end

local document = read_document()
-- A strong validator for conditional requests: the document's length and a
-- cheap checksum (it changes with every regeneration that changes a byte).
local function checksum(s)
  local h = 5381
  for i = 1, #s do
    h = (h * 33 + s:byte(i)) % 4294967296
  end
  return string.format('"%d-%08x"', #s, h)
end
local etag = checksum(document)

core.register_service("openapi", "http", function(applet)
  applet:add_header("cache-control", "public, max-age=300")
  applet:add_header("etag", etag)
  if applet.headers["if-none-match"] and applet.headers["if-none-match"][0] == etag then
    applet:set_status(304)
    applet:start_response()
    return
  end
  applet:set_status(200)
  applet:add_header("content-type", "application/json")
  applet:add_header("content-length", tostring(#document))
  applet:start_response()
  if applet.method ~= "HEAD" then
    applet:send(document)
  end
end)
