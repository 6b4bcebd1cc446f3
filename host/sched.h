/* sched.h: tasks. Every request, message, timer tick and host.spawn runs in a task: a Lua
 * coroutine anchored in the registry while it is alive. A host function that must wait
 * calls sched_need() to find its task, starts the operation, calls sched_suspend() with a
 * cancel hook and then `return lua_yield(L, 0)`. When the operation completes, its owner
 * pushes the results onto task->co and calls sched_resume(). Cancelling a task (test
 * timeout, shutdown) calls the cancel hook, which must detach the operation from the task:
 * the operation may finish later, but it must not touch the task again. */
#ifndef CHATHOST_SCHED_H
#define CHATHOST_SCHED_H

#include <lua.h>
#include <stdint.h>

#include "app.h"

typedef struct task task_t;

/* Called when the coroutine ends. ok=1: its nres return values are on top of t->co.
 * ok=0: the error message with traceback is on top of t->co. Return 1 when the error was
 * handled by the caller (not logged by the scheduler). The task is freed right after. */
typedef int (*task_done_fn)(void *ud, task_t *t, int ok, int nres);
typedef void (*task_cancel_fn)(void *op);

struct task {
    tracked track;
    struct app *app;
    lua_State *co;
    int slot;     /* its coroutine's slot (see sched.c), or 0 and co_ref */
    int co_ref;
    uint64_t id;
    task_cancel_fn cancel; /* set while suspended in a host operation */
    void *cancel_op;
    uv_timer_t *wait_timer; /* the deadline of sched_suspend_timeout */
    task_done_fn done;
    void *done_ud;
    const char *label;
    unsigned running : 1;
    unsigned suspended : 1;
    unsigned reusable : 1; /* its coroutine is back in the trampoline: pool it */
};

/* Runs the function below nargs arguments on L's stack as a new task (popping them) until
 * it first waits or ends. label names it in logs ("timer", "spawn", "POST /user_login").
 * Returns the task if it is still alive afterwards, NULL if it already ended. */
task_t *sched_spawn(struct app *app, lua_State *L, int nargs, const char *label,
                    task_done_fn done, void *ud);

/* The task running on L, or NULL when L is not a task's coroutine. */
task_t *sched_current(struct app *app, lua_State *L);

/* Like sched_current, but raises a Lua error naming fname when L is not a task. Called by
 * host C functions, whose upvalue 1 is the app (app_from). */
task_t *sched_need(lua_State *L, const char *fname);

/* Marks t as waiting on op; cancel(op) is called if the task is cancelled meanwhile. */
void sched_suspend(task_t *t, task_cancel_fn cancel, void *op);

/* sched_suspend with a deadline (timeout_ms < 0: none): when it passes first, cancel(op)
 * detaches the operation and the task resumes with nil, "timeout". */
void sched_suspend_timeout(task_t *t, task_cancel_fn cancel, void *op, long long timeout_ms);

/* Resumes a suspended task with nargs values already pushed onto t->co. */
void sched_resume(task_t *t, int nargs);

/* Convenience: resume with (nil, err). */
void sched_resume_error(task_t *t, const char *err);

/* Ends a task without resuming it: its pending operation is cancelled, its done callback
 * gets ok=0 with the message "cancelled" (not logged), and its coroutine is released. A
 * running task cannot be cancelled. */
void sched_cancel(task_t *t);

/* Packs the n values on top of L into a registry table {n=, ...} (popping them); returns
 * its ref. sched_push_packed pushes them onto co (L: the main state, or co itself) and
 * returns n. */
int sched_pack(lua_State *L, int n);
int sched_push_packed(lua_State *L, int ref, lua_State *co);

/* Makes app->sched and the trampoline (out of memory aborts, as every allocation does). */
void sched_init(struct app *app);
/* Frees app->sched and its spare tasks; after lua_close, when no task can run again. */
void sched_free(struct app *app);

#endif
