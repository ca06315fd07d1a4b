"""What busted shows a new user whose app is wrong, run as they would run it:
a spec whose hook raises fails with the hook's own error, file and line
(not "Expected objects to be the same. Passed in: { }"), and an app with a
misspelled hook gets a warning on stderr with the file and line, once.

The module is $MW_SIM_DIR/moonwire/sim.so (default build/lua/moonwire/sim.so)."""
import os
import pathlib
import subprocess

from conftest import ROOT

SIM_DIR = pathlib.Path(os.environ.get("MW_SIM_DIR", ROOT / "build" / "lua"))

CHAT = """\
local app = {}

function app.on_message(conn, data)
  local total = conn.data.total
  -- the new user forgot to start the total at 0 in on_open
  conn.data.total = total + tonumber(data)
  conn:send(tostring(conn.data.total))
end

return app
"""

CHAT_SPEC = """\
local sim = require "moonwire.sim"

describe("myapp/chat.lua", function()
  it("adds up what a client sends", function()
    local srv = sim.new { script = "myapp/chat.lua" }
    local c = srv:connect("/")
    c:send("1")
    assert.same({ { data = "1", kind = "text" } }, c:received())
  end)
end)
"""

MISSPELLED = """\
local app = {}

function app.onMessage(conn, data)
  conn:send(data)
end

return app
"""

MISSPELLED_SPEC = """\
local sim = require "moonwire.sim"

describe("myapp/echo.lua", function()
  for i = 1, 3 do
    it("echoes, take " .. i, function()
      local srv = sim.new { script = "myapp/echo.lua" }
      local c = srv:connect("/")
      c:send("hi")
      assert.same({ { data = "hi", kind = "text" } }, c:received())
    end)
  end
end)
"""


def busted(tmp_path, app, app_source, spec_source):
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / app).write_text(app_source)
    (tmp_path / "myapp_spec.lua").write_text(spec_source)
    return subprocess.run(["lua5.4", "/usr/bin/busted", f"--cpath={SIM_DIR}/?.so",
                           "myapp_spec.lua"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def test_a_hook_that_raises_fails_the_spec_with_its_error_file_and_line(tmp_path):
    p = busted(tmp_path, "chat.lua", CHAT, CHAT_SPEC)
    assert p.returncode != 0, p.stdout
    out = p.stdout
    assert "0 successes / 0 failures / 1 error" in out, out
    assert ("myapp_spec.lua:7: on_message raised an error (conn " in out
            and "): myapp/chat.lua:6: attempt to perform arithmetic on a nil value (local 'total')"
            in out), out
    assert "stack traceback of the hook:\n\tmyapp/chat.lua:6: in function <myapp/chat.lua:3>" in out, out
    assert "Passed in" not in out, out


def test_a_misspelled_hook_is_warned_about_once_with_file_and_line(tmp_path):
    p = busted(tmp_path, "echo.lua", MISSPELLED, MISSPELLED_SPEC)
    assert p.returncode != 0, p.stdout  # the specs fail: nothing calls onMessage
    warning = ("moonwire.sim: warning: myapp/echo.lua:3: app.onMessage is not a hook, so "
               "moonwire never calls it (did you mean on_message?)\n")
    assert p.stderr.count(warning) == 1, p.stderr
