-- The terminal client (`chathost client`, issue 6): the role runs main(args) and exits with
-- its result. The pieces follow the original Qt client's (its dialogs, HttpMgr, TcpMgr):
-- field checks (client.checks), the HTTP manager (client.http_mgr), the chat connection
-- (client.chat_conn); client.api puts them together as an object, client.ui is the
-- interactive line UI on host.tty, client.main reads the command line.
return {
    main = require "client.main".run,
    api = require "client.api",
    checks = require "client.checks",
    sentences = require "client.sentences",
    http_mgr = require "client.http_mgr",
    format = require "client.format",
    md5 = require "client.md5",
}
