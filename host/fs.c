/* fs.c: host.fs, local-disk helpers for tests, tools and start-up code (the harness, the
 * migrator, specs that write scripts). They block: never call them on a request path. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "modules.h"

static int fail(lua_State *L, const char *what, const char *path) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(errno));
    return 2;
}

/* kind(path) -> "file" | "directory" | "other" | nil */
static int l_kind(lua_State *L) {
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) != 0) return 0;
    lua_pushstring(L, S_ISDIR(st.st_mode) ? "directory" : S_ISREG(st.st_mode) ? "file" : "other");
    return 1;
}

/* list(dir) -> {names...} (without . and ..) | nil, err */
static int l_list(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) return fail(L, "cannot list", path);
    lua_newtable(L);
    int i = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++i);
    }
    closedir(d);
    return 1;
}

/* mkdtemp([prefix]) -> path of a new private directory under $TMPDIR or /tmp */
static int l_mkdtemp(lua_State *L) {
    const char *prefix = luaL_optstring(L, 1, "chathost");
    const char *tmp = getenv("TMPDIR");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    if (!mkdtemp(path)) return fail(L, "cannot create", path);
    lua_pushstring(L, path);
    return 1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

/* rmtree(path) -> true | nil, err: removes a file or a directory and everything in it */
static int l_rmtree(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        return fail(L, "cannot remove", path);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_mkdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return fail(L, "cannot create", path);
    lua_pushboolean(L, 1);
    return 1;
}

/* write(path, data) -> true | nil, err: writes to a temporary name and renames, so a
 * watcher never sees a half-written file */
static int l_write(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return fail(L, "cannot write", tmp);
    size_t w = fwrite(data, 1, len, f);
    if (fclose(f) != 0 || w != len) return fail(L, "cannot write", tmp);
    if (rename(tmp, path) != 0) return fail(L, "cannot rename to", path);
    lua_pushboolean(L, 1);
    return 1;
}

/* read(path) -> data | nil, err */
static int l_read(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    FILE *f = fopen(path, "rb");
    if (!f) return fail(L, "cannot read", path);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) luaL_addlstring(&b, buf, n);
    fclose(f);
    luaL_pushresult(&b);
    return 1;
}

int fs_open(lua_State *L) {
    static const luaL_Reg fns[] = {{"kind", l_kind},     {"list", l_list}, {"mkdtemp", l_mkdtemp},
                                   {"rmtree", l_rmtree}, {"mkdir", l_mkdir}, {"write", l_write},
                                   {"read", l_read},     {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    return 1;
}
