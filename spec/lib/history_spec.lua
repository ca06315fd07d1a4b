local history = require "history"

describe("history.lua", function()
  it("keeps items oldest first", function()
    local h = history.new()
    history.push(h, "a", 5)
    history.push(h, "b", 5)
    assert.same({ "a", "b" }, history.items(h))
    assert.equal("a,b", history.concat(h, ","))
    assert.equal(2, history.count(h))
  end)

  it("drops the oldest items past the cap", function()
    local h = history.new()
    for i = 1, 10 do
      history.push(h, "m" .. i, 3)
    end
    assert.same({ "m8", "m9", "m10" }, history.items(h))
    assert.is_nil(h[7])
  end)

  it("keeps nothing with a cap of 0", function()
    local h = history.new()
    history.push(h, "a", 0)
    assert.same({}, history.items(h))
    assert.equal("", history.concat(h, ","))
    assert.equal(0, history.count(h))
  end)

  it("trims to a lower cap", function()
    local h = history.new()
    for i = 1, 5 do
      history.push(h, i, 10)
    end
    history.trim(h, 2)
    assert.same({ 4, 5 }, history.items(h))
  end)

  it("is a plain table (it can live in moonwire.state)", function()
    local h = history.new()
    history.push(h, "x", 2)
    assert.is_nil(getmetatable(h))
    for _, v in pairs(h) do
      assert.is_true(type(v) == "string" or type(v) == "number")
    end
  end)
end)
