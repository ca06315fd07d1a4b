local filters = require "filters"

describe("filters.lua", function()
  describe("control", function()
    it("removes control characters but keeps tab and newline", function()
      assert.equal("ab\tc\nd", filters.control("a\0b\t\1c\r\nd\127"))
    end)

    it("returns a text without control characters unchanged", function()
      assert.equal("plain text", filters.control("plain text"))
    end)
  end)

  describe("trim", function()
    it("removes leading and trailing white space", function()
      assert.equal("hi there", filters.trim(" \t\n hi there \r\n "))
    end)

    it("keeps inner white space", function()
      assert.equal("a  b\nc", filters.trim("a  b\nc"))
    end)

    it("turns a blank text into an empty one", function()
      assert.equal("", filters.trim(" \t\n "))
      assert.equal("", filters.trim(""))
    end)

    it("keeps non-ASCII text at the edges", function()
      assert.equal("été ☀", filters.trim("  été ☀  "))
    end)

    it("runs in linear time on a long run of inner spaces", function()
      local text = "a" .. (" "):rep(200000) .. "b"
      local t0 = os.clock()
      assert.equal(text, filters.trim("  " .. text .. "  "))
      assert.is_true(os.clock() - t0 < 1)
    end)
  end)

  describe("not_empty", function()
    it("refuses an empty text with the code 'empty'", function()
      assert.same({ nil, "empty", "the message is empty" }, { filters.not_empty("") })
    end)

    it("keeps any other text", function()
      assert.equal(" ", filters.not_empty(" "))
    end)
  end)

  describe("max_length", function()
    it("counts characters, not bytes", function()
      local f = filters.max_length(3)
      assert.equal("ééé", f("ééé"))
      assert.equal("日本語", f("日本語"))
    end)

    it("refuses a longer text with the code 'too_long' and both lengths", function()
      local f = filters.max_length(3)
      assert.same({ nil, "too_long", "the message is 4 characters long; the limit is 3" }, { f("éééé") })
    end)

    it("refuses invalid UTF-8 with the code 'bad_text'", function()
      local f = filters.max_length(2)
      assert.same({ nil, "bad_text", "the text is not valid UTF-8" }, { f("\255\254\253") })
    end)

    it("wants a positive integer limit", function()
      assert.has_error(function()
        filters.max_length(0)
      end)
    end)
  end)

  describe("mask_words", function()
    local mask

    before_each(function()
      mask = filters.mask_words { "darn", "Heck", "merde" }
    end)

    it("masks listed words whatever their ASCII case", function()
      assert.equal("*** it, *** and ***!", mask("darn it, HECK and DaRn!"))
    end)

    it("masks whole words only", function()
      assert.equal("darning heckle ***", mask("darning heckle darn"))
    end)

    it("treats non-ASCII letters as part of a word", function()
      assert.equal("émerde *** ça", mask("émerde merde ça"))
    end)

    it("uses the given mask", function()
      assert.equal("[beep] x", filters.mask_words({ "darn" }, "[beep]")("darn x"))
    end)

    it("keeps a mask with pattern characters literally", function()
      assert.equal("%1 x", filters.mask_words({ "darn" }, "%1")("darn x"))
    end)

    it("is nil for an empty list (nothing to run)", function()
      assert.is_nil(filters.mask_words {})
    end)

    it("refuses a word that is not letters and digits", function()
      assert.same({ nil, 'word 2 must be letters and digits only (got "bad word")' },
        { filters.check_words { "ok", "bad word" } })
      assert.has_error(function()
        filters.mask_words { "bad word" }
      end)
    end)
  end)

  describe("chain", function()
    it("runs control, trim, not_empty, max_length and mask_words in order", function()
      local chain = filters.chain { max_length = 6, words = { "darn" } }
      assert.equal(5, #chain)
      assert.equal("*** a", filters.run(chain, "  darn\1 a \n"))
      assert.same({ nil, "empty", "the message is empty" }, { filters.run(chain, " \r ") })
      -- the limit applies after trimming
      assert.equal("abcdef", filters.run(chain, "   abcdef   "))
      assert.same({ nil, "too_long", "the message is 7 characters long; the limit is 6" },
        { filters.run(chain, "abcdefg") })
    end)

    it("has no masking filter without words and a 2000 character default", function()
      local chain = filters.chain {}
      assert.equal(4, #chain)
      assert.equal(("x"):rep(2000), filters.run(chain, ("x"):rep(2000)))
      assert.equal("too_long", select(2, filters.run(chain, ("x"):rep(2001))))
    end)
  end)

  describe("run", function()
    it("passes each filter's output and the ctx to the next", function()
      local seen = {}
      local chain = {
        function(text, ctx)
          seen[#seen + 1] = ctx.room
          return text .. "1"
        end,
        function(text)
          return text .. "2"
        end,
      }
      assert.equal("x12", filters.run(chain, "x", { room = "lobby" }))
      assert.same({ "lobby" }, seen)
    end)

    it("stops at the first refusal and returns its code and message", function()
      local later = spy.new(function(text)
        return text
      end)
      local chain = {
        function()
          return nil, "no_links", "links are not allowed"
        end,
        later,
      }
      assert.same({ nil, "no_links", "links are not allowed" }, { filters.run(chain, "http://x") })
      assert.spy(later).was_not_called()
    end)

    it("gives a refusal without a code the code 'filtered'", function()
      local chain = { function() return nil end }
      assert.same({ nil, "filtered", "the message was refused by a filter" }, { filters.run(chain, "x") })
    end)

    it("raises when a filter returns something other than a string", function()
      local chain = { function() return 42 end }
      assert.has_error(function()
        filters.run(chain, "x")
      end, "filter 1 returned a number (want a string, or nil and a code)")
    end)

    it("can be extended with table.insert", function()
      local chain = filters.chain {}
      table.insert(chain, function(text)
        return (text:gsub("teh", "the"))
      end)
      assert.equal("the end", filters.run(chain, " teh end "))
    end)
  end)
end)
