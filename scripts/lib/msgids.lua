-- lib.msgids: the msg_id of every chat frame (docs/protocol.md §6), by name, for the chat
-- servers (scripts/chat) and the client (scripts/client). A request's reply carries the
-- request's id + 1 (M.reply); pushes are sent by the server unasked. Named, because the
-- same numbers are also error codes (1019 is errors.Internal and the text push).
local M = {}

M.LOGIN = 1005                  -- -> 1006
M.SEARCH_USER = 1007            -- -> 1008
M.ADD_FRIEND = 1009             -- -> 1010
M.NOTIFY_ADD_FRIEND = 1011      -- push to the target of an application
M.AUTH_FRIEND = 1013            -- -> 1014
M.NOTIFY_AUTH_FRIEND = 1015     -- push to the applicant
M.TEXT_CHAT = 1017              -- -> 1018
M.NOTIFY_TEXT_CHAT = 1019       -- push to the peer
M.NOTIFY_KICKED = 1021          -- push: a newer login took the user; then closed
M.HEARTBEAT = 1023              -- -> 1024
M.LOAD_THREADS = 1025           -- -> 1026
M.CREATE_PRIVATE_CHAT = 1027    -- -> 1028
M.LOAD_MESSAGES = 1029          -- -> 1030
M.IMAGE_CHAT = 1035             -- -> 1036 (an image message announced, its file not uploaded yet)
M.NOTIFY_IMAGE = 1039           -- push to the receiver: an image's file is complete
M.IMAGE_URL = 1049              -- -> 1050 (a signed HTTP URL of an image)

-- Groups, read cursors and receipts (issue 14; docs/protocol.md §6.6): 1061-1099, clear
-- of the original's 1001-1048 and of 1049/1050.
M.CREATE_GROUP = 1061           -- -> 1062
M.INVITE_GROUP = 1063           -- -> 1064
M.GROUP_TEXT = 1065             -- -> 1066
M.NOTIFY_GROUP_TEXT = 1067      -- push to the other members online
M.NOTIFY_GROUP_EVENT = 1069     -- push: a membership or group change ("kind")
M.LEAVE_GROUP = 1071            -- -> 1072
M.REMOVE_MEMBER = 1073          -- -> 1074
M.SET_ROLE = 1075               -- -> 1076
M.TRANSFER_GROUP = 1077         -- -> 1078
M.UPDATE_GROUP = 1079           -- -> 1080
M.GROUP_MEMBERS = 1081          -- -> 1082
M.MY_GROUPS = 1083              -- -> 1084
M.MARK_READ = 1085              -- -> 1086
M.NOTIFY_READ = 1087            -- push: the other user of a private thread read up to

-- The push link between chat servers (chat.link; docs/protocol.md §6.7): 1201-1208, never
-- sent by or to a client.
M.LINK_HELLO = 1201             -- -> 1202 {error, name, nonce}
M.LINK_AUTH = 1203              -- -> 1204 {error}
M.LINK_PUSHES = 1205            -- -> 1206 {error, missed}
M.LINK_PING = 1207              -- -> 1208

-- The msg_id of the reply to request id.
function M.reply(id) return id + 1 end

return M
