/* file.c: host.file, asynchronous file I/O for scripts (the resource role's uploads and
 * downloads). Every call is one job off the loop: the calling task yields until it is done
 * and the loop never blocks on a disk. Writes run on writer threads of their own, one
 * file's one at a time in order (see "strands"), the other jobs on libuv's thread pool;
 * a read the page cache holds whole is made on the loop with RWF_NOWAIT, which cannot
 * wait for the disk (read_cached). Failures are nil, a sentence naming the path and the
 * cause, and the errno name ("ENOENT", "ENOSPC", ...) for scripts to branch on. Open files
 * are bounded per process (file.max_open); a file handle that is collected unclosed is
 * closed off the loop. host.fs (fs.c) is the blocking kind, for tools. */
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <pthread.h>
#include "blake3.h"
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include "alloc.h"
#include "file.h"
#include "log.h"
#include "modules.h"
#include "sched.h"

#define FILE_MT "chathost.file"
#define READ_MAX (16 << 20)     /* f:read(offset, n): n at most this (a script's mistake) */
#define HASH_CHUNK (64 * 1024)  /* blake3 reads the file this much at a time */
#define TALLY_MAX (1 << 25)     /* f:write's tally region: at most this many bytes (32 Mi
                                   pieces: 1 TiB in 32 KiB chunks, resource.max_file_bytes) */
#define TALLY_READ 65536        /* the tally is read back this much at a time */
#define HELD_MAX 1024           /* f:hash_start(max_held): at most this (a script's mistake) */
#define WRITEBACK_STEP (1 << 20) /* a hashed prefix starts its writeback this much at a time */
#define INLINE_READ_MAX (256 * 1024) /* a read the page cache answers whole, up to this, is
                                       made on the loop (read_cached) */

typedef struct runhash runhash;
typedef struct fjob fjob;
struct writers;
typedef struct fjob_list {
    fjob *head, *tail;
} fjob_list;

/* The process's open files (app->files). */
struct files {
    int open, max_open;
    unsigned long refused;
    unsigned long reads_cached, reads_pool; /* reads made on the loop (read_cached), on the pool */
    file_t *all;     /* every file_t not freed yet (a write looks for running hashes in it) */
    int hashing;     /* how many of them have a running hash (none: a write looks at none) */
    struct writers *writers; /* the threads that write (see "strands"), from the first write */
};

/* An open file. Jobs in flight hold it: the descriptor is closed only once the handle
 * is closed or collected and no job uses it any more (its number could be reused). */
struct file_t {
    struct app *app;
    int fd;          /* -1 once closed */
    int jobs;        /* jobs in flight on fd */
    int closing;     /* close() or collected: no new job */
    int ud_alive;    /* the Lua handle exists */
    int known;       /* dev and ino are the file's (fstat at open worked) */
    dev_t dev;
    ino_t ino;
    runhash *rh;     /* f:hash_start's running hash, or NULL */
    int no_nowait;   /* preadv2(RWF_NOWAIT) is not supported here: reads go to the pool */
    int64_t tally_from;  /* the first tally region counted through this handle (-1: none), */
    int64_t tally_known; /* and how many of its first bytes were all set then (they stay
                            set): its next counts read from there on (atomics: a truncate
                            on the loop resets it while a writer counts; a handle writes
                            one partial, so one region) */
    fjob_list strand;     /* its writes waiting (see "strands"; the writers' mutex) */
    int strand_busy;      /* in the ready list or with a writer */
    file_t *ready_next;   /* in the ready list */
    int hashes_out;       /* writes answered whose running hash is still to take them in
                             (see "strands"): they stay in jobs until it has */
    fjob *hash_head, *hash_tail; /* those writes, in the order written (the writers' mutex) */
    int hash_queued, hash_busy;  /* in the writers' hash list; a writer hashes them, */
    fjob *hashing;               /* this one (the writers' mutex) */
    file_t *hash_next;           /* in the writers' hash list */
    task_t *hash_waiter;  /* f:digest waiting for them, or NULL */
    int64_t wait_size;    /* its size, */
    int wait_gref;        /* and its second handle (a registry ref, LUA_NOREF: none) */
    file_t *prev, *next; /* in files.all, while listed */
    int listed;
    char path[];     /* for error messages */
};

typedef struct file_ud {
    file_t *f;
} file_ud;

struct fjob {
    uv_work_t work;
    fjob *next;                         /* in a strand's queue or the done list */
    fjob *enext;                        /* in the answered list (see "strands") */
    fjob *hnext;                        /* in its file's hash backlog */
    int hash_later, hash_ok;            /* its running hash takes it in after its answer */
    struct app *app;
    task_t *task;                       /* NULL once the waiting task was cancelled */
    file_t *file;                       /* the file it works on (held), or NULL */
    void (*run)(fjob *j);               /* on a pool or writer thread: sets err or results */
    int (*push)(fjob *j, lua_State *co); /* on the loop, on success: pushes the results */
    void (*after)(fjob *j);             /* on the loop, first, whether anyone waits or not */
    int err;                            /* errno of the failure; 0: success */
    const char *what;                   /* "cannot open", ...: the sentence's start */
    char *path, *path2;
    int flags, fd;
    int64_t offset;
    const char *data;                   /* write: the Lua string, anchored by data_ref */
    size_t len;
    int data_ref;
    char *buf;                          /* read: what was read (len bytes); write_base64:
                                           the bytes decoded */
    int buf_kept;                       /* buf is a kept buffer (decoded_get) */
    int64_t tally_at, tally_from;       /* write with a tally: its byte, its region (-1: none) */
    size_t tally_n, tallied;            /* the region's length; its nonzero bytes after */
    struct stat st;
    int stat_ok;                        /* open: st is the opened file's */
    char hex[BLAKE3_OUT_LEN * 2 + 1];
};

/* ---- the process's files --------------------------------------------------------------- */

static struct files *files_get(struct app *app) {
    if (app->files) return app->files;
    struct files *fs = xcalloc(1, sizeof *fs);
    fs->max_open = (int)cfg_int(app, "file.max_open", 1024);
    app->files = fs;
    return fs;
}

static void writers_free(struct writers *w);

/* Frees the count after the loop has ended: handles collected later close at once. */
void file_release_all(struct app *app) {
    struct files *fs = app->files;
    if (!fs) return;
    for (file_t *f = fs->all; f; f = f->next) f->listed = 0;
    writers_free(fs->writers);
    free(fs);
    app->files = NULL;
}

static void files_list(file_t *f) {
    struct files *fs = files_get(f->app);
    f->prev = NULL;
    f->next = fs->all;
    if (fs->all) fs->all->prev = f;
    fs->all = f;
    f->listed = 1;
}

static void files_unlist(file_t *f) {
    if (!f->listed) return;
    struct files *fs = f->app->files;
    if (f->prev) f->prev->next = f->next;
    else fs->all = f->next;
    if (f->next) f->next->prev = f->prev;
    f->listed = 0;
}

static void closer_run(uv_work_t *w) {
    fjob *j = w->data;
    close(j->fd);
}

static void closer_done(uv_work_t *w, int status) {
    fjob *j = w->data;
    if (j->app->files) j->app->files->open--;
    free(j);
}

/* Closes fd on the pool, nobody waiting (a collected handle, an open nobody waits for).
 * After the loop has ended, at once. */
static void close_off_loop(struct app *app, int fd) {
    if (!app->files) {
        close(fd);
        return;
    }
    fjob *j = xcalloc(1, sizeof *j);
    j->app = app;
    j->fd = fd;
    j->work.data = j;
    if (uv_queue_work(app->loop, &j->work, closer_run, closer_done) != 0) {
        close(fd); /* the loop is closing: no thread will take it */
        app->files->open--;
        free(j);
    }
}

static void rh_free(file_t *f);

/* Frees f once its handle is gone and no job holds it, closing its descriptor first. */
static void file_maybe_free(file_t *f) {
    if (f->jobs > 0) return;
    if (f->closing && f->fd >= 0) {
        close_off_loop(f->app, f->fd);
        f->fd = -1;
    }
    if (!f->ud_alive) {
        rh_free(f);
        files_unlist(f);
        free(f);
    }
}

/* ---- running hashes ------------------------------------------------------------------------
 * f:hash_start() keeps a BLAKE3 of the contiguous prefix [0, end) of what is written through
 * f, so that a completed upload need not be read again to be named (lib.store commit). Its
 * writes run in the order they were submitted (its strand) but need not be submitted in
 * the file's order (a resumed upload's chunks): each, after its pwrite, extends the prefix
 * when it starts at its end (and then the held writes that now follow), is held (a copy;
 * at most max_held) when it starts past it, and ends the hash for good when it lands on
 * bytes already hashed or held (a resend: which of two writes of the same bytes reached
 * the file last is not known here), fails, or when one more would have to be held. A
 * write through any other host.file handle of the same file (same device and inode:
 * another connection, write_part's own descriptor) ends it too, when it is submitted: so
 * a valid digest of n bytes is the BLAKE3 of the file's first n bytes as long as no one
 * outside host.file wrote them (host.fs, another process: the resource role is one
 * process per storage root). Hashing is on the writer threads, under the hash's mutex. */

/* A write past the hashed prefix, held until the prefix reaches it */
typedef struct held {
    struct held *next; /* by offset */
    int64_t off;
    size_t len;
    unsigned char data[];
} held;

struct runhash {
    uv_mutex_t mu;
    blake3_hasher b3;
    int valid;        /* 0: given up for good */
    const char *why;  /* why it was given up (the first cause) */
    int64_t end;      /* [0, end) hashed */
    int nheld, max_held;
    held *held;
    int64_t written_back; /* [0, written_back) of the prefix: writeback started */
};

/* Gives the hash up for good, for the reason why (mu held). */
static void rh_invalidate(runhash *rh, const char *why) {
    if (rh->valid) rh->why = why;
    rh->valid = 0;
    while (rh->held) {
        held *h = rh->held;
        rh->held = h->next;
        free(h);
    }
    rh->nheld = 0;
}

static void rh_free(file_t *f) {
    runhash *rh = f->rh;
    if (!rh) return;
    rh_invalidate(rh, "freed");
    uv_mutex_destroy(&rh->mu);
    free(rh);
    f->rh = NULL;
    if (f->listed) f->app->files->hashing--;
}

/* off, len overlaps what is hashed or held (mu held) */
static int rh_overlaps(const runhash *rh, int64_t off, size_t len) {
    if (off < rh->end) return 1;
    for (const held *h = rh->held; h; h = h->next)
        if (off < h->off + (int64_t)h->len && h->off < off + (int64_t)len) return 1;
    return 0;
}

/* The prefix extended by data, then by the held writes that follow it now (mu held). */
static void rh_extend(runhash *rh, const void *data, size_t len) {
    blake3_hasher_update(&rh->b3, data, len);
    rh->end += (int64_t)len;
    while (rh->held && rh->held->off == rh->end) {
        held *h = rh->held;
        rh->held = h->next;
        rh->nheld--;
        blake3_hasher_update(&rh->b3, h->data, h->len);
        rh->end += (int64_t)h->len;
        free(h);
    }
}

/* A copy of a write past the prefix, in offset order (mu held; no overlap). */
static void rh_hold(runhash *rh, int64_t off, const void *data, size_t len) {
    if (rh->nheld >= rh->max_held) {
        rh_invalidate(rh, "more writes before their turn than it may hold");
        return;
    }
    held *h = xmalloc(sizeof *h + len);
    h->off = off;
    h->len = len;
    memcpy(h->data, data, len);
    held **at = &rh->held;
    while (*at && (*at)->off < off) at = &(*at)->next;
    h->next = *at;
    *at = h;
    rh->nheld++;
}

/* On the writer thread, after a write job of f: ok when all len bytes were written. Each
 * whole WRITEBACK_STEP the prefix passes has its writeback started (not waited for), so that
 * the commit's fsync finds little left to write. */
static void rh_wrote(file_t *f, int64_t off, const void *data, size_t len, int ok) {
    runhash *rh = f->rh;
    int64_t from = 0, to = 0;
    uv_mutex_lock(&rh->mu);
    if (!rh->valid || len == 0) {
        /* nothing to do (a write of nothing changes no byte) */
    } else if (!ok) {
        rh_invalidate(rh, "a write failed");
    } else if (rh_overlaps(rh, off, len)) {
        rh_invalidate(rh, "bytes hashed or held were written again");
    } else if (off == rh->end) {
        rh_extend(rh, data, len);
        from = rh->written_back;
        to = rh->end / WRITEBACK_STEP * WRITEBACK_STEP;
        if (to > from) rh->written_back = to;
    } else {
        rh_hold(rh, off, data, len);
    }
    uv_mutex_unlock(&rh->mu);
    /* a hint (its failure is the commit's fsync's to report), outside the mutex: the
     * request queue may be full and make it wait */
    if (to > from) sync_file_range(f->fd, from, to - from, SYNC_FILE_RANGE_WRITE);
}

static int same_file(const file_t *a, const file_t *b) {
    return a->known && b->known && a->dev == b->dev && a->ino == b->ino;
}

/* On the loop, before a write through f is queued: the running hashes of other handles of
 * the same file (or of any file, when f's identity is unknown) end. */
static void rh_foreign_write(file_t *f) {
    struct files *fs = f->app->files;
    if (!fs || fs->hashing == 0) return;
    for (file_t *h = fs->all; h; h = h->next) {
        if (h == f || !h->rh || (f->known && !same_file(f, h))) continue;
        uv_mutex_lock(&h->rh->mu);
        rh_invalidate(h->rh, "another handle of the file wrote to it");
        uv_mutex_unlock(&h->rh->mu);
    }
}

/* ---- decoded chunks' buffers ------------------------------------------------------------
 * A write_base64 job decodes into a buffer of its own on a writer thread and the loop frees
 * it with the job. Freed from one thread and taken again from another, every chunk's
 * buffer went back to glibc's arena of the writer, which gave the heap's top back to the
 * kernel (madvise, from the loop's thread) and took it again for the next chunk, its pages
 * faulted in and zeroed again: one upload at a time ~17,000 page faults a second, 600 with
 * the buffers kept. So the buffers of a chunk's size (DECODED_SIZE: a 64 KiB frame's
 * base64, the default resource.max_body_bytes) are kept, DECODED_KEEP at most (1.5 MiB)
 * when unused, for the next; larger ones are malloc'd and freed as before. */
#define DECODED_SIZE 49152
#define DECODED_KEEP 32

static pthread_mutex_t decoded_mu = PTHREAD_MUTEX_INITIALIZER;
static void *decoded_kept[DECODED_KEEP];
static int decoded_n;
static unsigned long decoded_made; /* buffers of DECODED_SIZE malloc'd so far (stats()) */

/* A buffer of n bytes at least; *kept: it goes back with decoded_put */
static void *decoded_get(size_t n, int *kept) {
    *kept = n <= DECODED_SIZE;
    if (!*kept) return xmalloc(n);
    void *b = NULL;
    pthread_mutex_lock(&decoded_mu);
    if (decoded_n > 0) b = decoded_kept[--decoded_n];
    else decoded_made++;
    pthread_mutex_unlock(&decoded_mu);
    return b ? b : xmalloc(DECODED_SIZE);
}

static void decoded_put(void *b) {
    pthread_mutex_lock(&decoded_mu);
    if (decoded_n < DECODED_KEEP) {
        decoded_kept[decoded_n++] = b;
        b = NULL;
    }
    pthread_mutex_unlock(&decoded_mu);
    free(b);
}

/* ---- jobs -------------------------------------------------------------------------------- */

static void job_cancel(void *op) { ((fjob *)op)->task = NULL; }

static task_t *digest_ready(file_t *f, int *n);

static void job_free(fjob *j) {
    if (j->data_ref != LUA_NOREF) luaL_unref(j->app->L, LUA_REGISTRYINDEX, j->data_ref);
    free(j->path);
    free(j->path2);
    if (j->buf_kept) decoded_put(j->buf);
    else free(j->buf);
    free(j);
}

/* nil, "<what> <path>[ to <path2>]: <strerror>", "<ERRNO>" */
static int push_failure(lua_State *L, const char *what, const char *path, const char *path2,
                        int err) {
    lua_pushnil(L);
    if (path2)
        lua_pushfstring(L, "%s %s to %s: %s", what, path, path2, strerror(err));
    else
        lua_pushfstring(L, "%s %s: %s", what, path, strerror(err));
    lua_pushstring(L, uv_err_name(-err));
    return 3;
}

static void job_work(uv_work_t *w) {
    fjob *j = w->data;
    j->run(j);
}

/* On the loop, a job is over (status: libuv's, UV_ECANCELED when it never ran): its
 * waiting task resumed with its results. */
static void job_finish(fjob *j, int status) {
    if (status == UV_ECANCELED) j->err = ECANCELED;
    if (j->after) j->after(j);
    task_t *t = j->task;
    int n = 0;
    if (t) { /* the results first: letting go of the file may free it (and its path) */
        const char *path = j->file ? j->file->path : j->path;
        n = j->err ? push_failure(t->co, j->what, path, j->path2, j->err) : j->push(j, t->co);
    }
    task_t *waiter = NULL; /* f:digest's, when this was the last write it waited for */
    int wn = 0;
    if (j->file) {
        file_t *f = j->file;
        f->jobs--;
        if (j->hash_later && --f->hashes_out == 0 && f->hash_waiter) waiter = digest_ready(f, &wn);
        file_maybe_free(f); /* (not freed while a digest waited: its task holds the handle) */
    }
    job_free(j);
    if (t) sched_resume(t, n);
    if (waiter) sched_resume(waiter, wn); /* last: the task may let go of f */
}

static void job_done(uv_work_t *w, int status) { job_finish(w->data, status); }

/* On the loop, a write answered before its running hash takes it in (see "strands"): its
 * task resumed with its results now; the job holds its file until job_finish. */
static void job_answer(fjob *j) {
    task_t *t = j->task;
    j->file->hashes_out++;
    if (j->data_ref != LUA_NOREF) { /* (decoded: only j->buf is hashed) */
        luaL_unref(j->app->L, LUA_REGISTRYINDEX, j->data_ref);
        j->data_ref = LUA_NOREF;
    }
    if (!t) return;
    j->task = NULL;
    int n = j->err ? push_failure(t->co, j->what, j->file->path, j->path2, j->err)
                   : j->push(j, t->co);
    sched_resume(t, n);
}

static fjob *job_new(struct app *app, void (*run)(fjob *), int (*push)(fjob *, lua_State *),
                     const char *what) {
    fjob *j = xcalloc(1, sizeof *j);
    j->app = app;
    j->run = run;
    j->push = push;
    j->what = what;
    j->data_ref = LUA_NOREF;
    j->fd = -1;
    j->tally_at = -1;
    j->work.data = j;
    return j;
}

/* Queues j for the task running on L and yields; the return value of a Lua C function. */
static int job_submit(lua_State *L, fjob *j, const char *fname) {
    task_t *t = sched_need(L, fname);
    if (j->file) j->file->jobs++;
    int rc = uv_queue_work(j->app->loop, &j->work, job_work, job_done);
    if (rc != 0) {
        if (j->file) j->file->jobs--;
        j->task = NULL;
        j->err = -rc;
        int n = push_failure(L, j->what, j->file ? j->file->path : j->path, j->path2, -rc);
        if (j->after) j->after(j);
        job_free(j);
        return n;
    }
    j->task = t;
    sched_suspend(t, job_cancel, j);
    return lua_yield(L, 0);
}

/* ---- strands -------------------------------------------------------------------------------
 * A file's writes run one at a time, in the order they were submitted, on threads of
 * their own (writers: self.write_threads, resource.write_threads, default 1; not libuv's
 * pool, whose threads keep the fsyncs, opens, reads and hashes). A file with writes
 * waiting is in the ready list once; a writer takes it, runs up to STRAND_BATCH of its
 * writes and puts it back at the end of the list if more are waiting. So two threads never
 * write one file at once (they would contend for its inode lock), a running hash gets the
 * chunks in order (none held; a plain f:write is hashed as it is written, so after its
 * file's backlog only when it comes before its turn: a resend), a connection's chunks in flight wake a writer only when it
 * had run out of work, and with one writer the same thread always takes them (with two
 * pool threads woken in turn, one upload at a time ran at 0.5-0.6 of the rate of one:
 * bench/RESULTS.md). Each write, once done, goes to the loop at once (the done list and
 * one async handle; a hashed write, answered already, waits for the next answer or the
 * backlog's end). A write of decoded bytes (write_base64) through a handle with a
 * running hash is answered as soon as it is written (the answered list: its task resumes)
 * and hashed later, when no write waits or first once HASH_BACKLOG wait to be hashed; it is
 * done (its job finished, its file let go) after that, and f:digest waits for it: so a
 * chunk's answer never waits for the hashing of the chunks before it (one upload at a time
 * ran 0.63 -> 0.74 of the plain receiver, bench/RESULTS.md). Other jobs on a file are pool
 * jobs (job_submit): the scripts order them after its writes. One mutex (writers.mu) keeps
 * the files' queues, the ready list, the answered, hash and done lists: the loop and the
 * writers hold it for a few pointer moves. A writer out of work spins up to
 * self.write_spin_us (resource.write_spin_us, 100; other roles 0) before it sleeps: a
 * connection's next chunk, ~50 us later one upload at a time, then finds it awake (no
 * futex wake on the loop's side, no wake-up latency of a sleeping CPU on the writer's: a
 * chunk's wait for its writer 45 -> 6-24 us, its write 31 -> 14-27 us on this 2-core VM;
 * bench/RESULTS.md); with work queued it never spins. It spins on sched_yield, not on a
 * pause: the client, the loop and the writer want the machine's two CPUs at once, and a
 * thread that waits for this CPU runs first (the writer then spins only the time the CPU
 * would have been idle; one upload at a time the role's MB/s +13%, CPU per GB -0.3 s). */

#define STRAND_BATCH 16 /* writes a writer takes from one file before the next file */
#define HASH_BACKLOG 16 /* writes answered and not yet hashed (their bytes held), at most
                          * this and one per other writer thread (one write a pass is run
                          * when the files to hash are all being hashed) */

struct writers {
    uv_mutex_t mu;
    uv_cond_t cv;
    file_t *ready_head, *ready_tail; /* files with writes waiting and no writer */
    fjob_list answered;              /* writes whose running hash is still to come: their
                                        results, for the loop (linked by enext) */
    fjob_list done;                  /* writes done, for the loop */
    file_t *hash_head, *hash_tail;   /* files with writes to hash and no writer hashing them */
    int backlog, backlog_max;        /* writes answered and not yet hashed; the most so far */
    int urgent;                      /* f:digest calls waiting for a backlog: hashes first */
    uv_async_t *async;               /* wakes the loop for them (ref'd while writes are out) */
    int out;                         /* writes submitted and not yet finished on the loop */
    int idle, stop, n;
    int work;                        /* 1 while the ready list is not empty (read by
                                        spinning writers without the mutex: atomic) */
    uint64_t spin_ns;                /* how long a writer out of work spins (0: none) */
    uv_thread_t *threads;
};

static void list_push(fjob_list *l, fjob *j) {
    j->next = NULL;
    if (l->tail) l->tail->next = j;
    else l->head = j;
    l->tail = j;
}

static fjob *list_pop(fjob_list *l) {
    fjob *j = l->head;
    if (j) {
        l->head = j->next;
        if (!l->head) l->tail = NULL;
        j->next = NULL;
    }
    return j;
}

static void ready_push(struct writers *w, file_t *f) {
    f->ready_next = NULL;
    if (w->ready_tail) w->ready_tail->ready_next = f;
    else w->ready_head = f;
    w->ready_tail = f;
    __atomic_store_n(&w->work, 1, __ATOMIC_RELEASE);
}

/* A writer out of work (mu held; released meanwhile): spins up to w->spin_ns for a write
 * to arrive or the writers to stop, then, still with neither, sleeps until one is
 * submitted or the writers stop. */
static void writer_wait(struct writers *w) {
    if (w->spin_ns > 0) {
        uv_mutex_unlock(&w->mu);
        uint64_t t0 = uv_hrtime();
        while (!__atomic_load_n(&w->work, __ATOMIC_ACQUIRE) &&
               !__atomic_load_n(&w->stop, __ATOMIC_RELAXED) && uv_hrtime() - t0 < w->spin_ns)
            sched_yield(); /* (a thread waiting for this CPU runs first: the spin only
                            * takes the time it would have been idle) */
        uv_mutex_lock(&w->mu);
        if (w->ready_head || w->hash_head || w->stop) return;
    }
    w->idle++;
    uv_cond_wait(&w->cv, &w->mu);
    w->idle--;
}

/* f at the end of the files to hash (mu held; it has writes to hash, no writer on them). */
static void hash_list_push(struct writers *w, file_t *f) {
    f->hash_next = NULL;
    if (w->hash_tail) w->hash_tail->hash_next = f;
    else w->hash_head = f;
    w->hash_tail = f;
    f->hash_queued = 1;
}

/* A write answered before its hash: to its file's hash backlog (mu held). */
static void backlog_push(struct writers *w, file_t *f, fjob *j) {
    j->enext = NULL; /* answered: for the loop's job_answer first */
    if (w->answered.tail) w->answered.tail->enext = j;
    else w->answered.head = j;
    w->answered.tail = j;
    j->hnext = NULL;
    if (f->hash_tail) f->hash_tail->hnext = j;
    else f->hash_head = j;
    f->hash_tail = j;
    if (++w->backlog > w->backlog_max) w->backlog_max = w->backlog;
    if (!f->hash_queued && !f->hash_busy) hash_list_push(w, f);
}

/* The oldest write of the first file in the hash list taken into its running hash, then
 * done (mu held, released meanwhile). */
static void backlog_hash_one(struct writers *w) {
    file_t *f = w->hash_head;
    w->hash_head = f->hash_next;
    if (!w->hash_head) w->hash_tail = NULL;
    f->hash_queued = 0;
    fjob *j = f->hash_head;
    f->hash_head = j->hnext;
    if (!f->hash_head) f->hash_tail = NULL;
    w->backlog--;
    f->hash_busy = 1;
    f->hashing = j;
    uv_mutex_unlock(&w->mu);
    rh_wrote(f, j->offset, j->data, j->len, j->hash_ok); /* (j still holds f) */
    uv_mutex_lock(&w->mu);
    f->hash_busy = 0;
    f->hashing = NULL;
    if (f->hash_head) hash_list_push(w, f); /* more of it: behind the other files */
    list_push(&w->done, j); /* last: the loop may free f once j is finished */
    /* (its answer woke the loop already: the done ones wait for the backlog's last, or for
     * the next answer, whichever comes first) */
    if (w->backlog == 0) uv_async_send(w->async);
}

/* A writer thread: the ready files' writes, STRAND_BATCH at a time per file, before any
 * hashing; a write through a handle with a running hash is answered as soon as it is
 * written (the loop resumes its task: job_answer) and taken into the hash when no write
 * waits, or first once HASH_BACKLOG writes wait to be hashed (then down to half of them,
 * so that writes keep running in batches) or an f:digest waits for a backlog (its file's
 * hashes must not wait for other files' writes); only then is it done. A
 * file's writes are hashed in the order they were written, by one writer at a time. A file
 * is looked at only with the mutex held from before its last write went to the done list,
 * or while one of its writes is not done: the loop may free it once the last is finished. */
static void writer_main(void *arg) {
    struct writers *w = arg;
    int draining = 0; /* the backlog reached HASH_BACKLOG: hashing down to half of it */
    uv_mutex_lock(&w->mu);
    for (;;) {
        while (!w->ready_head && !w->hash_head && !w->stop) writer_wait(w);
        if (w->stop) break; /* (after the loop's end: nothing waits for what is queued) */
        if (w->backlog >= HASH_BACKLOG) draining = 1;
        else if (w->backlog <= HASH_BACKLOG / 2) draining = 0;
        if (w->hash_head && (!w->ready_head || draining || w->urgent > 0)) {
            backlog_hash_one(w);
            continue;
        }
        file_t *f = w->ready_head;
        w->ready_head = f->ready_next;
        if (!w->ready_head) {
            w->ready_tail = NULL;
            __atomic_store_n(&w->work, 0, __ATOMIC_RELAXED);
        }
        /* (one write at least: the files to hash may all be another writer's now) */
        for (int n = 0; n < STRAND_BATCH && (n == 0 || w->backlog < HASH_BACKLOG); n++) {
            fjob *j = list_pop(&f->strand);
            if (!j) break;
            uv_mutex_unlock(&w->mu);
            j->run(j);
            uv_mutex_lock(&w->mu);
            if (j->hash_later) {
                backlog_push(w, f, j);
                uv_async_send(w->async);
                continue;
            }
            list_push(&w->done, j);
            uv_async_send(w->async);
        }
        if (f->strand.head) ready_push(w, f); /* more: behind the other files */
        else f->strand_busy = 0;
    }
    uv_mutex_unlock(&w->mu);
}

/* On the loop: the writes the writers have finished, their tasks resumed, in order. */
static void writers_drain(uv_async_t *a) {
    struct writers *w = a->data;
    uv_mutex_lock(&w->mu);
    fjob *e = w->answered.head;
    w->answered.head = w->answered.tail = NULL;
    fjob *j = w->done.head;
    w->done.head = w->done.tail = NULL;
    uv_mutex_unlock(&w->mu);
    while (e) { /* (before the done ones: a job may be in both; answered jobs are resumed
                 * ahead of earlier writes still being hashed) */
        fjob *next = e->enext;
        job_answer(e);
        e = next;
    }
    while (j) {
        fjob *next = j->next;
        if (--w->out == 0) uv_unref((uv_handle_t *)w->async);
        job_finish(j, 0);
        j = next;
    }
}

static struct writers *writers_get(struct app *app, struct files *fs) {
    if (fs->writers) return fs->writers;
    struct writers *w = xcalloc(1, sizeof *w);
    uv_mutex_init(&w->mu);
    uv_cond_init(&w->cv);
    w->async = xmalloc(sizeof *w->async);
    uv_async_init(app->loop, w->async, writers_drain);
    w->async->data = w;
    uv_unref((uv_handle_t *)w->async); /* (ref'd while writes are out) */
    w->n = (int)cfg_int(app, "self.write_threads", 1);
    int64_t spin_us = cfg_int(app, "self.write_spin_us", 0);
    w->spin_ns = spin_us > 0 ? (uint64_t)spin_us * 1000 : 0;
    if (w->n < 1) w->n = 1;
    w->threads = xcalloc((size_t)w->n, sizeof *w->threads);
    for (int i = 0; i < w->n; i++)
        if (uv_thread_create(&w->threads[i], writer_main, w) != 0) abort(); /* (EAGAIN) */
    fs->writers = w;
    return w;
}

static void handle_free(uv_handle_t *h) { free(h); }

/* After the loop has ended (no write is out): the writers stop. */
static void writers_free(struct writers *w) {
    if (!w) return;
    uv_mutex_lock(&w->mu);
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELAXED); /* (read by spinning writers too) */
    uv_cond_broadcast(&w->cv);
    uv_mutex_unlock(&w->mu);
    for (int i = 0; i < w->n; i++) uv_thread_join(&w->threads[i]);
    if (uv_is_closing((uv_handle_t *)w->async)) /* a shutdown past its deadline closed it */
        free(w->async);
    else
        uv_close((uv_handle_t *)w->async, handle_free);
    uv_cond_destroy(&w->cv);
    uv_mutex_destroy(&w->mu);
    free(w->threads);
    free(w);
}

/* job_submit for a write: j joins its file's strand. */
static int strand_submit(lua_State *L, fjob *j, const char *fname) {
    task_t *t = sched_need(L, fname);
    file_t *f = j->file;
    struct writers *w = writers_get(j->app, files_get(j->app));
    f->jobs++;
    j->task = t;
    if (w->out++ == 0) uv_ref((uv_handle_t *)w->async);
    uv_mutex_lock(&w->mu);
    list_push(&f->strand, j);
    if (!f->strand_busy) {
        f->strand_busy = 1;
        ready_push(w, f);
        if (w->idle > 0) uv_cond_signal(&w->cv);
    }
    uv_mutex_unlock(&w->mu);
    sched_suspend(t, job_cancel, j);
    return lua_yield(L, 0);
}

static int push_true(fjob *j, lua_State *co) {
    lua_pushboolean(co, 1);
    return 1;
}

/* ---- host.file.open ---------------------------------------------------------------------- */

static void open_run(fjob *j) {
    /* no atime update: a cached read on the loop (read_cached) never touches the journal */
    j->fd = open(j->path, j->flags | O_CLOEXEC | O_NOATIME, 0600);
    if (j->fd < 0) /* (O_NOATIME: only the owner's files, else EPERM) */
        j->fd = open(j->path, j->flags | O_CLOEXEC, 0600);
    if (j->fd < 0) j->err = errno;
    else j->stat_ok = fstat(j->fd, &j->st) == 0; /* its identity, for running hashes */
}

/* The reservation in the open count is given back when the open failed; an open nobody
 * waits for any more is closed. */
static void open_after(fjob *j) {
    struct files *fs = j->app->files;
    if (j->fd < 0) {
        fs->open--;
    } else if (!j->task) {
        close_off_loop(j->app, j->fd);
        j->fd = -1;
    }
}

static int open_push(fjob *j, lua_State *co) {
    size_t n = strlen(j->path);
    file_t *f = xmalloc(sizeof *f + n + 1);
    memcpy(f->path, j->path, n + 1);
    f->app = j->app;
    f->fd = j->fd;
    f->jobs = f->closing = 0;
    f->ud_alive = 1;
    f->known = j->stat_ok;
    f->dev = j->st.st_dev;
    f->ino = j->st.st_ino;
    f->rh = NULL;
    f->no_nowait = 0;
    f->tally_from = -1;
    f->tally_known = 0;
    f->hashes_out = 0;
    f->hash_head = f->hash_tail = NULL;
    f->hash_queued = f->hash_busy = 0;
    f->hashing = NULL;
    f->hash_waiter = NULL;
    f->wait_gref = LUA_NOREF;
    f->strand.head = f->strand.tail = NULL;
    f->strand_busy = 0;
    files_list(f);
    file_ud *u = lua_newuserdata(co, sizeof *u);
    u->f = f;
    luaL_getmetatable(co, FILE_MT);
    lua_setmetatable(co, -2);
    return 1;
}

static int open_flags(lua_State *L, const char *mode) {
    if (strcmp(mode, "r") == 0) return O_RDONLY;
    if (strcmp(mode, "w") == 0) return O_RDWR | O_CREAT;
    if (strcmp(mode, "rw") == 0) return O_RDWR;
    if (strcmp(mode, "wx") == 0) return O_RDWR | O_CREAT | O_EXCL;
    return luaL_argerror(L, 2, "mode must be \"r\", \"rw\", \"w\" or \"wx\"");
}

/* open(path, mode) -> f | nil, err, code. "rw" reads and writes an existing file, "w"
 * creates (0600) without truncating, "wx" only creates; beyond file.max_open open files:
 * nil, err, "EMFILE" */
static int l_open(lua_State *L) {
    struct app *app = app_from(L);
    const char *path = luaL_checkstring(L, 1);
    int flags = open_flags(L, luaL_checkstring(L, 2));
    struct files *fs = files_get(app);
    if (fs->open >= fs->max_open) {
        if (fs->refused++ % 1000 == 0)
            log_warn("file: %d files open (file.max_open): refusing more (%lu so far)", fs->open,
                     fs->refused);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot open %s: %d files are open already (file.max_open)", path,
                        fs->open);
        lua_pushliteral(L, "EMFILE");
        return 3;
    }
    fjob *j = job_new(app, open_run, open_push, "cannot open");
    j->path = xstrdup(path);
    j->flags = flags;
    j->after = open_after;
    fs->open++; /* reserved now: opens in flight count against the bound too */
    return job_submit(L, j, "host.file.open");
}

/* ---- file methods ------------------------------------------------------------------------ */

static file_t *check_file(lua_State *L) {
    file_ud *u = luaL_checkudata(L, 1, FILE_MT);
    if (!u->f || u->f->closing) luaL_error(L, "file is closed");
    return u->f;
}

static int64_t check_offset(lua_State *L, int idx) {
    lua_Number off = luaL_checknumber(L, idx);
    luaL_argcheck(L, off >= 0 && off < 9007199254740992.0 && off == (int64_t)off, idx,
                  "must be a whole number >= 0");
    return (int64_t)off;
}

/* After a write with a tally: its byte set (outside any running hash: the tally is not the
 * file's content) and the region read back, its nonzero bytes counted. */
static void tally_run(fjob *j) {
    static const char one = 1;
    ssize_t n;
    do n = pwrite(j->file->fd, &one, 1, (off_t)j->tally_at);
    while (n < 0 && errno == EINTR);
    if (n != 1) {
        j->err = n < 0 ? errno : EIO;
        return;
    }
    /* the region's first bytes known to be set (a prefix, through this handle) are not
     * read again: a count costs the bytes after the contiguous prefix (a few, for pieces
     * written mostly in order), not the whole region */
    file_t *f = j->file;
    int64_t region = -1, known = 0;
    int cached = __atomic_compare_exchange_n(&f->tally_from, &region, j->tally_from, 0,
                                             __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) ||
                 region == j->tally_from;
    if (cached) known = __atomic_load_n(&f->tally_known, __ATOMIC_ACQUIRE);
    if ((size_t)known > j->tally_n) known = 0;
    unsigned char r[TALLY_READ];
    size_t c = (size_t)known, pos = (size_t)known, prefix = (size_t)known;
    int gap = 0;
    while (pos < j->tally_n) {
        size_t want = j->tally_n - pos < sizeof r ? j->tally_n - pos : sizeof r;
        n = pread(f->fd, r, want, (off_t)j->tally_from + (off_t)pos);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            j->err = errno;
            return;
        }
        if (n == 0) break; /* the end of the file: the rest is not set */
        for (ssize_t i = 0; i < n; i++) {
            if (r[i]) {
                c++;
                if (!gap) prefix++;
            } else {
                gap = 1;
            }
        }
        pos += (size_t)n;
    }
    if (cached) { /* the prefix only grows */
        int64_t cur = __atomic_load_n(&f->tally_known, __ATOMIC_ACQUIRE);
        while (cur < (int64_t)prefix &&
               !__atomic_compare_exchange_n(&f->tally_known, &cur, (int64_t)prefix, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        }
    }
    j->tallied = c;
}

static void write_run(fjob *j) {
    size_t done = 0;
    if (j->tally_at >= j->offset && j->tally_at < j->offset + (int64_t)j->len) {
        /* (for base64, known once decoded) */
        j->what = "a tally byte among the bytes to write, nothing written to";
        j->err = EINVAL;
        return;
    }
    while (done < j->len) {
        ssize_t n = pwrite(j->file->fd, j->data + done, j->len - done, j->offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            j->err = errno;
            break;
        }
        done += (size_t)n;
    }
    if (j->file->rh && j->buf) { /* the bytes are the job's (decoded): hashed after */
        j->hash_later = 1;
        j->hash_ok = j->err == 0;
    } else if (j->file->rh) {
        rh_wrote(j->file, j->offset, j->data, j->len, j->err == 0);
    }
    if (!j->err && j->tally_at >= 0) tally_run(j);
}

/* The base64 of a write_base64 job decoded into a buffer of its own (the Lua string stays
 * as it came), then written as any write; text that is not base64 is written nowhere. */
static void write_base64_run(fjob *j) {
    int kept;
    unsigned char *bin = decoded_get(j->len / 4 * 3 + 1, &kept);
    ssize_t n = crypto_b64_decode(bin, (const unsigned char *)j->data, j->len);
    if (n < 0) {
        if (kept) decoded_put(bin);
        else free(bin);
        j->what = "not base64, nothing written to";
        j->err = EINVAL;
        return;
    }
    j->buf = (char *)bin; /* freed (or kept) with the job */
    j->buf_kept = kept;
    j->data = j->buf;
    j->len = (size_t)n;
    write_run(j);
}

static int push_tallied(fjob *j, lua_State *co) {
    lua_pushboolean(co, 1);
    lua_pushinteger(co, (lua_Integer)j->tallied);
    return 2;
}

/* A write job of the Lua string at idx 3 (anchored until job_finish, or job_answer for a
 * decoded write), with the tally at idx 4
 * if any -> f:write's results */
static int submit_write(lua_State *L, file_t *f, void (*run)(fjob *), const char *fname) {
    int64_t off = check_offset(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    rh_foreign_write(f);
    int64_t at = -1, from = 0;
    lua_Integer tn = 0;
    if (!lua_isnoneornil(L, 4)) { /* the tally: {at=, from=, n=} */
        luaL_checktype(L, 4, LUA_TTABLE);
        lua_getfield(L, 4, "at");
        lua_getfield(L, 4, "from");
        lua_getfield(L, 4, "n");
        at = check_offset(L, -3);
        from = check_offset(L, -2);
        tn = luaL_checkinteger(L, -1);
        lua_pop(L, 3);
        luaL_argcheck(L, tn >= 1 && tn <= TALLY_MAX && at >= from && at < from + tn, 4,
                      "tally: n must be 1..33554432 and at within from..from+n-1");
        luaL_argcheck(L, run != write_run || at >= off + (int64_t)len || at < off, 4,
                      "tally: its byte must lie outside the bytes written");
    }
    fjob *j = job_new(f->app, run, at >= 0 ? push_tallied : push_true, "cannot write");
    j->file = f;
    j->offset = off;
    j->data = data;
    j->len = len;
    j->tally_at = at;
    j->tally_from = from;
    j->tally_n = (size_t)tn;
    lua_pushvalue(L, 3);
    j->data_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* the bytes stay put until then */
    return strand_submit(L, j, fname);
}

/* f:write_base64(offset, text[, tally]) -> true[, tallied] | nil, err, code: text decoded
 * (strict base64, as host.crypto.base64_decode) on the writer thread and written at offset;
 * "EINVAL" when it is not base64 (nothing written); the tally as f:write's. The resource
 * role's chunks: no decoded copy on the loop. */
static int l_write_base64(lua_State *L) {
    return submit_write(L, check_file(L), write_base64_run, "file:write_base64");
}

/* f:write(offset, data[, tally]) -> true[, tallied] | nil, err, code: all of data at
 * offset; with tally = {at=, from=, n=}, then byte at set to 1 and the set bytes of the n
 * at from counted (tally_run) */
static int l_write(lua_State *L) { return submit_write(L, check_file(L), write_run, "file:write"); }

static void read_run(fjob *j) {
    size_t done = 0;
    while (done < j->len) {
        ssize_t n = pread(j->file->fd, j->buf + done, j->len - done, j->offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            j->err = errno;
            return;
        }
        if (n == 0) break; /* end of file */
        done += (size_t)n;
    }
    j->len = done;
}

static int read_push(fjob *j, lua_State *co) {
    lua_pushlstring(co, j->buf, j->len);
    return 1;
}

/* What a read job read, replaced by its base64 (on the pool thread, as it read it). */
static void read_base64_run(fjob *j) {
    read_run(j);
    if (j->err) return;
    char *text = xmalloc((j->len + 2) / 3 * 4 + 1);
    crypto_b64_encode(text, (const unsigned char *)j->buf, j->len);
    free(j->buf);
    j->buf = text;
    j->len = (j->len + 2) / 3 * 4;
}

/* A read the page cache can answer whole, made on the loop: preadv2 with RWF_NOWAIT never
 * waits for the disk (EAGAIN, or fewer bytes, when a page is not cached), so it costs the
 * copy and not the pool's two thread hand-offs (a download chunk's). A read that the end
 * of the file cuts short is whole too (an fstat tells it from a page not cached: a file's
 * last chunk, a tally read with one byte more). Pushes what f:read (or, base64,
 * f:read_base64) gives -> 1 | 0 (not all cached, or not supported: the caller makes a
 * pool job of it). */
static int read_cached(lua_State *L, file_t *f, int64_t off, size_t n, int base64) {
    if (f->no_nowait || n == 0 || n > INLINE_READ_MAX) return 0;
    size_t tlen = base64 ? (n + 2) / 3 * 4 : 0;
    char *buf = xmalloc(n + tlen); /* the bytes, then their base64 */
    struct iovec v = {buf, n};
    ssize_t got = preadv2(f->fd, &v, 1, (off_t)off, RWF_NOWAIT);
    if (got < 0 && (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS)) f->no_nowait = 1;
    int whole = got == (ssize_t)n; /* else the pool reads it (and tells the errors apart) */
    struct stat st; /* short: the end of the file (not a page the cache lacks) is as good */
    if (!whole && got >= 0 && fstat(f->fd, &st) == 0 && off + got >= st.st_size) {
        whole = 1;
        n = (size_t)got;
        if (base64) tlen = (n + 2) / 3 * 4;
    }
    if (whole) {
        f->app->files->reads_cached++;
        if (base64) crypto_b64_encode(buf + n, (const unsigned char *)buf, n);
        lua_pushlstring(L, buf + (base64 ? n : 0), base64 ? tlen : n);
    }
    free(buf);
    return whole;
}

/* A read job of n (argument 3) bytes at offset (argument 2) -> the results of f:read */
static int submit_read(lua_State *L, void (*run)(fjob *), const char *fname) {
    file_t *f = check_file(L);
    int64_t off = check_offset(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, n >= 0 && n <= READ_MAX, 3, "must be 0..16777216");
    sched_need(L, fname); /* (as every call, cached or not) */
    if (read_cached(L, f, off, (size_t)n, run == read_base64_run)) return 1;
    f->app->files->reads_pool++;
    fjob *j = job_new(f->app, run, read_push, "cannot read");
    j->file = f;
    j->offset = off;
    j->len = (size_t)n;
    j->buf = xmalloc(n ? (size_t)n : 1);
    return job_submit(L, j, fname);
}

/* f:read(offset, n) -> up to n bytes ("" at the end of the file) | nil, err, code */
static int l_read(lua_State *L) { return submit_read(L, read_run, "file:read"); }

/* f:read_base64(offset, n) -> the base64 (original alphabet, padded) of what f:read would
 * give, encoded where it is read (on the loop when the page cache holds it, read_cached;
 * else on the pool thread) | nil, err, code. The resource role's download chunks. */
static int l_read_base64(lua_State *L) { return submit_read(L, read_base64_run, "file:read_base64"); }

static void sync_run(fjob *j) {
    if (fsync(j->file->fd) != 0) j->err = errno;
}

/* f:sync() -> true | nil, err, code: the data is on the disk */
static int l_sync(lua_State *L) {
    file_t *f = check_file(L);
    fjob *j = job_new(f->app, sync_run, push_true, "cannot sync");
    j->file = f;
    return job_submit(L, j, "file:sync");
}

static void truncate_run(fjob *j) {
    if (ftruncate(j->file->fd, (off_t)j->offset) != 0) j->err = errno;
}

/* f:truncate(size) -> true | nil, err, code: the file is size bytes (cut, or extended with
 * zeros). A running hash of the file (any handle) that covers or holds bytes past size is
 * given up; every handle of the file counts its tally anew. */
static int l_truncate(lua_State *L) {
    file_t *f = check_file(L);
    int64_t size = check_offset(L, 2);
    struct writers *w = f->app->files->writers;
    for (file_t *h = f->app->files->all; h; h = h->next) {
        if (h != f && (!f->known || !same_file(f, h))) continue;
        __atomic_store_n(&h->tally_known, 0, __ATOMIC_RELEASE); /* its bytes may be cut */
        if (!h->rh) continue;
        int cut = 0; /* writes answered and still to be hashed count as hashed */
        if (w) {
            uv_mutex_lock(&w->mu);
            const fjob *now = h->hashing;
            cut = now && now->offset + (int64_t)now->len > size;
            for (const fjob *x = h->hash_head; x && !cut; x = x->hnext)
                cut = x->offset + (int64_t)x->len > size;
            uv_mutex_unlock(&w->mu);
        }
        uv_mutex_lock(&h->rh->mu);
        cut = cut || h->rh->end > size;
        for (held *x = h->rh->held; x && !cut; x = x->next) cut = x->off + (int64_t)x->len > size;
        if (cut) rh_invalidate(h->rh, "the file was truncated");
        uv_mutex_unlock(&h->rh->mu);
    }
    fjob *j = job_new(f->app, truncate_run, push_true, "cannot truncate");
    j->file = f;
    j->offset = size;
    return job_submit(L, j, "file:truncate");
}

/* Another handle of f's file with a job in flight (a write of it may be under way). */
static int others_busy(file_t *f) {
    for (file_t *h = f->app->files->all; h; h = h->next)
        if (h != f && h->jobs > 0 && (!f->known || !h->known || same_file(f, h))) return 1;
    return 0;
}

/* f:hash_start(max_held) -> true | nil, err: a running BLAKE3 of what is written through f
 * from now on (see "running hashes" above), holding at most max_held writes that come
 * before their turn; nil while a job of f is in flight. A second call does nothing. It
 * starts given up when another handle of the file has a job in flight. */
static int l_hash_start(lua_State *L) {
    file_t *f = check_file(L);
    lua_Integer max_held = luaL_checkinteger(L, 2);
    luaL_argcheck(L, max_held >= 0 && max_held <= HELD_MAX, 2, "must be 0..1024");
    if (f->rh) { /* a second call */
        lua_pushboolean(L, 1);
        return 1;
    }
    if (f->jobs > 0) { /* (a writer thread could read f->rh as it is set) */
        lua_pushnil(L);
        lua_pushfstring(L, "cannot hash %s: jobs are under way", f->path);
        return 2;
    }
    runhash *rh = xcalloc(1, sizeof *rh);
    blake3_hasher_init(&rh->b3);
    uv_mutex_init(&rh->mu);
    rh->max_held = (int)max_held;
    rh->valid = 1;
    if (!f->known) rh_invalidate(rh, "the file's identity is not known");
    else if (others_busy(f)) rh_invalidate(rh, "another handle of the file was busy at its start");
    f->rh = rh;
    f->app->files->hashing++;
    lua_pushboolean(L, 1);
    return 1;
}

/* The results of f:digest(size, g) (g: NULL or the second handle) on L. */
static int digest_push(lua_State *L, file_t *f, int64_t size, file_ud *g) {
    const char *why = NULL;
    runhash *rh = f->rh;
    if (!rh) why = "no running hash (f:hash_start)";
    else if (f->closing) why = "the file was closed";
    else if (f->jobs > 0) why = "jobs are under way";
    else if (g && (!g->f || g->f->closing || !same_file(f, g->f))) why = "not the same file";
    unsigned char out[BLAKE3_OUT_LEN];
    if (!why) {
        uv_mutex_lock(&rh->mu);
        if (!rh->valid) why = rh->why;
        else if (rh->end != size || rh->nheld > 0) why = "the hashed bytes are not the size";
        else blake3_hasher_finalize(&rh->b3, out, sizeof out); /* (the hasher unchanged) */
        uv_mutex_unlock(&rh->mu);
    }
    if (why) {
        lua_pushnil(L);
        lua_pushfstring(L, "no running hash of %s: %s%s", f->path,
                        rh && !rh->valid ? "given up: " : "", why);
        return 2;
    }
    char hex[BLAKE3_OUT_LEN * 2 + 1];
    sodium_bin2hex(hex, sizeof hex, out, sizeof out);
    lua_pushstring(L, hex);
    return 1;
}

/* f:digest's waiter, hashed or not, no longer counted as urgent by the writers */
static void digest_unurgent(file_t *f) {
    struct writers *w = f->app->files ? f->app->files->writers : NULL;
    if (!w) return;
    uv_mutex_lock(&w->mu);
    w->urgent--;
    uv_mutex_unlock(&w->mu);
}

/* f:digest's wait given up (its task cancelled) */
static void digest_cancel(void *op) {
    file_t *f = op;
    f->hash_waiter = NULL;
    digest_unurgent(f);
    luaL_unref(f->app->L, LUA_REGISTRYINDEX, f->wait_gref);
    f->wait_gref = LUA_NOREF;
}

/* On the loop, the last write answered before its hash is taken in: f:digest's results
 * pushed onto its waiting task -> that task (resumed by the caller, with *n results), its
 * wait over. */
static task_t *digest_ready(file_t *f, int *n) {
    task_t *t = f->hash_waiter;
    f->hash_waiter = NULL;
    digest_unurgent(f);
    int gref = f->wait_gref;
    f->wait_gref = LUA_NOREF;
    file_ud *g = NULL;
    if (gref != LUA_NOREF) {
        lua_rawgeti(t->co, LUA_REGISTRYINDEX, gref);
        g = lua_touserdata(t->co, -1);
        lua_pop(t->co, 1);
    }
    *n = digest_push(t->co, f, f->wait_size, g); /* (g's ref held until it has looked) */
    luaL_unref(t->co, LUA_REGISTRYINDEX, gref);
    return t;
}

/* f:digest(size[, g]) -> 64 hex digits | nil, why: the BLAKE3 of the first size bytes of
 * f's file, from its running hash, when that is still valid, covers exactly size bytes,
 * no job of f is in flight and g (a handle, e.g. the one about to be linked) is of the
 * same file. Writes already answered whose bytes the hash has still to take in (see
 * "strands") are waited for. Only the hash's last block is computed here, on the loop. */
static int l_digest(lua_State *L) {
    file_t *f = check_file(L);
    int64_t size = check_offset(L, 2);
    file_ud *g = lua_isnoneornil(L, 3) ? NULL : luaL_checkudata(L, 3, FILE_MT);
    if (f->hashes_out > 0 && f->jobs == f->hashes_out && !f->hash_waiter) {
        task_t *t = sched_need(L, "f:digest");
        f->wait_size = size;
        f->wait_gref = LUA_NOREF;
        if (g) {
            lua_pushvalue(L, 3);
            f->wait_gref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        f->hash_waiter = t;
        struct writers *w = f->app->files->writers; /* (writes were answered: it exists) */
        uv_mutex_lock(&w->mu);
        w->urgent++; /* its file's backlog is hashed before further writes */
        uv_mutex_unlock(&w->mu);
        sched_suspend(t, digest_cancel, f);
        return lua_yield(L, 0);
    }
    return digest_push(L, f, size, g);
}

static void fstat_run(fjob *j) {
    if (fstat(j->file->fd, &j->st) != 0) j->err = errno;
}

static int size_push(fjob *j, lua_State *co) {
    lua_pushnumber(co, (lua_Number)j->st.st_size);
    return 1;
}

/* f:size() -> bytes | nil, err, code */
static int l_size(lua_State *L) {
    file_t *f = check_file(L);
    fjob *j = job_new(f->app, fstat_run, size_push, "cannot stat");
    j->file = f;
    return job_submit(L, j, "file:size");
}

static void close_run(fjob *j) {
    if (close(j->file->fd) != 0) j->err = errno;
}

/* The descriptor is gone even when close reported an error (Linux frees it first). */
static void close_after(fjob *j) {
    j->file->fd = -1;
    if (j->app->files) j->app->files->open--;
}

/* f:close() -> true | nil, err, code. Later calls of any method raise; a second close
 * does nothing. With reads or writes still in flight, the file is closed after them. */
static int l_file_close(lua_State *L) {
    file_ud *u = luaL_checkudata(L, 1, FILE_MT);
    file_t *f = u->f;
    lua_pushboolean(L, 1);
    if (!f || f->closing) return 1;
    f->closing = 1;
    if (f->jobs > 0) return 1; /* the last of them closes it (file_maybe_free) */
    fjob *j = job_new(f->app, close_run, push_true, "cannot close");
    j->file = f;
    j->after = close_after;
    return job_submit(L, j, "file:close");
}

static int l_file_gc(lua_State *L) {
    file_ud *u = luaL_checkudata(L, 1, FILE_MT);
    file_t *f = u->f;
    if (!f) return 0;
    u->f = NULL;
    f->ud_alive = 0;
    f->closing = 1;
    file_maybe_free(f);
    return 0;
}

static int l_file_tostring(lua_State *L) {
    file_ud *u = luaL_checkudata(L, 1, FILE_MT);
    lua_pushfstring(L, "file %s%s", u->f ? u->f->path : "?",
                    !u->f || u->f->closing ? " (closed)" : "");
    return 1;
}

/* ---- for other C modules (file.h) ------------------------------------------------------ */

file_t *file_take(lua_State *L, int idx) {
    file_ud *u = luaL_testudata(L, idx, FILE_MT);
    if (!u || !u->f || u->f->closing || u->f->fd < 0) return NULL;
    u->f->jobs++;
    return u->f;
}

int file_fd(const file_t *f) { return f->fd; }

const char *file_path(const file_t *f) { return f->path; }

void file_finish(file_t *f) {
    f->closing = 1;
    f->jobs--;
    file_maybe_free(f);
}

/* ---- path functions ---------------------------------------------------------------------- */

/* mkdir -p on a pool thread: each missing component with 0755. */
static void mkdirs_run(fjob *j) {
    char *p = j->path;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        struct stat st;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) j->err = errno;
        else if (stat(p, &st) != 0) j->err = errno;
        else if (!S_ISDIR(st.st_mode)) j->err = ENOTDIR;
        *s = c;
        if (j->err || c == '\0') return;
    }
}

static void rename_run(fjob *j) {
    if (rename(j->path, j->path2) != 0) j->err = errno;
}

static void link_run(fjob *j) {
    if (link(j->path, j->path2) != 0) j->err = errno;
}

static void unlink_run(fjob *j) {
    if (unlink(j->path) != 0) j->err = errno;
}

static void stat_run(fjob *j) {
    if (stat(j->path, &j->st) != 0) j->err = errno;
}

static int stat_push(fjob *j, lua_State *co) {
    lua_createtable(co, 0, 3);
    lua_pushnumber(co, (lua_Number)j->st.st_size);
    lua_setfield(co, -2, "size");
    lua_pushnumber(co, (lua_Number)j->st.st_mtime);
    lua_setfield(co, -2, "mtime");
    lua_pushstring(co, S_ISREG(j->st.st_mode)   ? "file"
                       : S_ISDIR(j->st.st_mode) ? "directory"
                                                : "other");
    lua_setfield(co, -2, "kind");
    return 1;
}

/* BLAKE3-256 (third_party/blake3: SSE4.1/AVX2/AVX-512 chosen at run time), the hash that
 * names the resource role's stored files: about a third of SHA-256's time with the CPU's
 * SHA extensions, on the writer threads that hash every uploaded byte. */
static void blake3_run(fjob *j) {
    int fd = open(j->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        j->err = errno;
        return;
    }
    blake3_hasher b3;
    blake3_hasher_init(&b3);
    unsigned char *buf = xmalloc(HASH_CHUNK);
    int64_t left = j->offset; /* -1: to the end */
    while (left != 0) {
        size_t want = left > 0 && left < HASH_CHUNK ? (size_t)left : HASH_CHUNK;
        ssize_t n = read(fd, buf, want);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) j->err = errno;
        if (n <= 0) break;
        blake3_hasher_update(&b3, buf, (size_t)n);
        if (left > 0) left -= n;
    }
    if (!j->err && left > 0) j->err = ERANGE; /* shorter than asked */
    close(fd);
    free(buf);
    unsigned char out[BLAKE3_OUT_LEN];
    blake3_hasher_finalize(&b3, out, sizeof out);
    sodium_bin2hex(j->hex, sizeof j->hex, out, sizeof out);
}

static int hex_push(fjob *j, lua_State *co) {
    lua_pushstring(co, j->hex);
    return 1;
}

/* A job on one path (two for rename and link) given as the arguments 1 (and 2). */
static int path_job(lua_State *L, void (*run)(fjob *), int (*push)(fjob *, lua_State *),
                    const char *what, int two, const char *fname) {
    const char *a = luaL_checkstring(L, 1);
    const char *b = two ? luaL_checkstring(L, 2) : NULL;
    fjob *j = job_new(app_from(L), run, push, what);
    j->path = xstrdup(a);
    if (b) j->path2 = xstrdup(b);
    return job_submit(L, j, fname);
}

/* mkdirs(path) -> true | nil, err, code: the directory and its missing parents */
static int l_mkdirs(lua_State *L) {
    luaL_argcheck(L, *luaL_checkstring(L, 1) != '\0', 1, "must not be empty");
    return path_job(L, mkdirs_run, push_true, "cannot create", 0, "host.file.mkdirs");
}

/* rename(a, b) -> true | nil, err, code (b replaced if it exists) */
static int l_rename(lua_State *L) {
    return path_job(L, rename_run, push_true, "cannot rename", 1, "host.file.rename");
}

/* link(a, b) -> true | nil, err, code: b names a's file too; "EEXIST" when b exists */
static int l_link(lua_State *L) {
    return path_job(L, link_run, push_true, "cannot link", 1, "host.file.link");
}

/* unlink(path) -> true | nil, err, code */
static int l_unlink(lua_State *L) {
    return path_job(L, unlink_run, push_true, "cannot remove", 0, "host.file.unlink");
}

/* stat(path) -> {size=, mtime= (unix seconds), kind= "file"|"directory"|"other"} |
 * nil, err, code */
static int l_stat(lua_State *L) {
    return path_job(L, stat_run, stat_push, "cannot stat", 0, "host.file.stat");
}

/* blake3(path[, n]) -> 64 hex digits | nil, err, code: the file (its first n bytes: shorter
 * is "ERANGE") read 64 KiB at a time in one pool job */
static int l_blake3(lua_State *L) {
    luaL_checkstring(L, 1);
    int64_t n = lua_isnoneornil(L, 2) ? -1 : check_offset(L, 2);
    fjob *j = job_new(app_from(L), blake3_run, hex_push, "cannot hash");
    j->path = xstrdup(lua_tostring(L, 1));
    j->offset = n;
    return job_submit(L, j, "host.file.blake3");
}

/* configure{max_open=} -> true: the bound on open files (default: config file.max_open) */
static int l_configure(lua_State *L) {
    struct files *fs = files_get(app_from(L));
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer max = vm_opt_int(L, 1, "max_open", fs->max_open);
    luaL_argcheck(L, max >= 1 && max <= 1000000, 1, "max_open must be 1..1000000");
    fs->max_open = (int)max;
    lua_pushboolean(L, 1);
    return 1;
}

/* stats() -> {open=, max_open=, refused=, reads_cached=, reads_pool=, hash_backlog_max=,
 * decoded_made=, decoded_kept=} */
static int l_stats(lua_State *L) {
    struct files *fs = files_get(app_from(L));
    pthread_mutex_lock(&decoded_mu); /* (read, then pushed: Lua may raise, not with it held) */
    unsigned long made = decoded_made;
    int kept = decoded_n;
    pthread_mutex_unlock(&decoded_mu);
    lua_createtable(L, 0, 8);
    lua_pushnumber(L, (lua_Number)made);
    lua_setfield(L, -2, "decoded_made");
    lua_pushinteger(L, kept);
    lua_setfield(L, -2, "decoded_kept");
    lua_pushnumber(L, (lua_Number)fs->reads_cached);
    lua_setfield(L, -2, "reads_cached");
    lua_pushnumber(L, (lua_Number)fs->reads_pool);
    lua_setfield(L, -2, "reads_pool");
    lua_pushinteger(L, fs->open);
    lua_setfield(L, -2, "open");
    lua_pushinteger(L, fs->max_open);
    lua_setfield(L, -2, "max_open");
    lua_pushnumber(L, (lua_Number)fs->refused);
    lua_setfield(L, -2, "refused");
    int most = 0;
    if (fs->writers) {
        uv_mutex_lock(&fs->writers->mu);
        most = fs->writers->backlog_max;
        uv_mutex_unlock(&fs->writers->mu);
    }
    lua_pushinteger(L, most);
    lua_setfield(L, -2, "hash_backlog_max");
    return 1;
}

/* host.file = {open=, mkdirs=, rename=, link=, unlink=, stat=, blake3=, configure=, stats=} */
int file_open(lua_State *L) {
    static const luaL_Reg methods[] = {{"write", l_write}, {"write_base64", l_write_base64},
                                       {"read", l_read}, {"read_base64", l_read_base64},
                                       {"sync", l_sync}, {"hash_start", l_hash_start},
                                       {"digest", l_digest},
                                       {"size", l_size},   {"truncate", l_truncate},
                                       {"close", l_file_close},
                                       {NULL, NULL}};
    static const luaL_Reg fns[] = {
        {"open", l_open},     {"mkdirs", l_mkdirs}, {"rename", l_rename},
        {"link", l_link},     {"unlink", l_unlink}, {"stat", l_stat},
        {"blake3", l_blake3}, {"configure", l_configure}, {"stats", l_stats},
        {NULL, NULL}};
    vm_class(L, FILE_MT, methods, NULL, l_file_gc);
    luaL_getmetatable(L, FILE_MT);
    lua_pushcfunction(L, l_file_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
