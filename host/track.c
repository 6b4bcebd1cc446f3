/* track.c: the app's list of tracked resources (app.h): what a task, timer, socket or child
 * process adds while alive, so that shutdown closes what is left and the test harness
 * (harness.c) can name what a test left behind. */
#include "app.h"

void track_add(struct app *app, tracked *t, const char *kind, void (*close)(tracked *)) {
    t->serial = ++app->track_serial;
    t->kind = kind;
    t->close = close;
    list_push_back(&app->tracked_list, &t->link);
}

void track_del(tracked *t) { list_remove(&t->link); }
