-- bench/chat_stored.lua: prints the number of chat messages stored (rows of chat_message) in
-- the bench's MariaDB, for bench/chat_msgs.sh's acked == stored check. Run with `chathost
-- exec`.
local host = require "host"
local rows = assert(host.db.query("SELECT COUNT(*) AS n FROM chat_message"))
print(rows[1].n)
return 0
