/* errors.h: the error codes of the protocol (docs/protocol.md §2), the one list of them.
 * C replies use the ERR_ constants; Lua reads the same table as host.errors (errors.c),
 * and scripts/lib/errors.lua is built from that. */
#ifndef CHATHOST_ERRORS_H
#define CHATHOST_ERRORS_H

/* X(name, code): name is the one scripts use (errors.InvalidParams). */
#define HOST_ERRORS(X)                                                                   \
    X(Success, 0)                                                                        \
    X(Error_Json, 1001)       /* body is not a JSON object, or a field has the wrong type */ \
    X(RPCFailed, 1002)        /* a gRPC call to another role failed or timed out */      \
    X(VarifyExpired, 1003)    /* no verification code for that e-mail */                 \
    X(VarifyCodeErr, 1004)    /* verification code wrong */                              \
    X(UserExist, 1005)        /* user name or e-mail already registered */               \
    X(PasswdErr, 1006)        /* register: passwd and confirm differ */                  \
    X(EmailNotMatch, 1007)    /* reset: user name and e-mail do not belong together */    \
    X(PasswdUpFailed, 1008)   /* reset: the update failed */                             \
    X(PasswdInvalid, 1009)    /* login: unknown e-mail or wrong password */              \
    X(TokenInvalid, 1010)     /* chat login: token missing, expired or wrong */          \
    X(UidInvalid, 1011)       /* the user named does not exist */                        \
    X(CreateChatFailed, 1012)                                                            \
    X(LoadChatFailed, 1013)                                                              \
    X(NotLoggedIn, 1014)                                                                 \
    X(PermissionDenied, 1015)                                                            \
    X(InvalidParams, 1016)    /* the reply says which field in "field" */                \
    X(RateLimited, 1017)      /* "retry_after" says how many seconds */                  \
    X(ServerBusy, 1018)       /* a lock or a pool could not be had in time; safe to retry */ \
    X(Internal, 1019)                                                                    \
    /* the resource channel's own (docs/protocol.md §13) */                              \
    X(FileNotFound, 1100)     /* no such file, or no upload in progress under that name */ \
    X(FileTooLarge, 1101)     /* total_size above resource.max_file_bytes */             \
    X(FileTypeRefused, 1102)  /* the content is none of resource.image_types */          \
    X(QuotaExceeded, 1103)    /* resource.quota_bytes or max_uploads of the user */      \
    X(BadChunk, 1104)         /* seq, offset, sizes or data inconsistent */              \
    X(StorageFailed, 1105)    /* the disk said no (full, permission): nothing complete */ \
    X(NotParticipant, 1106)   /* the file belongs to a thread the user is not in */      \
    X(UploadIncomplete, 1107) /* the file is still being uploaded (or failed) */         \
    X(NameTaken, 1108)        /* the name is another user's upload */

#define HOST_ERROR_ENUM(name, code) ERR_##name = code,
enum host_error { HOST_ERRORS(HOST_ERROR_ENUM) };
#undef HOST_ERROR_ENUM

#endif
