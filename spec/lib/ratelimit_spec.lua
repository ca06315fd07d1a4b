local ratelimit = require "ratelimit"

describe("ratelimit.lua", function()
  describe("take", function()
    it("allows a burst, then refuses with the wait until the next token", function()
      local b = ratelimit.new(3, 0)
      assert.is_true(ratelimit.take(b, 0, 3, 2))
      assert.is_true(ratelimit.take(b, 0, 3, 2))
      assert.is_true(ratelimit.take(b, 0, 3, 2))
      assert.same({ false, 500 }, { ratelimit.take(b, 0, 3, 2) })
    end)

    it("refills at the rate", function()
      local b = ratelimit.new(1, 0)
      assert.is_true(ratelimit.take(b, 0, 1, 4))
      assert.same({ false, 150 }, { ratelimit.take(b, 100, 1, 4) })
      assert.is_true(ratelimit.take(b, 250, 1, 4))
    end)

    it("never holds more than the burst", function()
      local b = ratelimit.new(2, 0)
      local allowed = 0
      for _ = 1, 5 do
        if ratelimit.take(b, 1000000, 2, 10) then
          allowed = allowed + 1
        end
      end
      assert.equal(2, allowed)
    end)

    it("shrinks a full bucket when the burst is lowered", function()
      local b = ratelimit.new(10, 0)
      assert.is_true(ratelimit.take(b, 0, 1, 1))
      assert.is_false((ratelimit.take(b, 0, 1, 1)))
    end)

    it("does not refill when time goes backwards", function()
      local b = ratelimit.new(1, 1000)
      assert.is_true(ratelimit.take(b, 1000, 1, 1))
      assert.is_false((ratelimit.take(b, 0, 1, 1)))
      assert.equal(1000, b.at)
    end)
  end)
end)
