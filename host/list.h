/* list.h: an intrusive doubly linked list (the shape of the Linux kernel's and libuv's
 * QUEUE). Used for tasks, timers and pending operations; no allocation of its own. */
#ifndef CHATHOST_LIST_H
#define CHATHOST_LIST_H

#include <stddef.h>

typedef struct list_node {
    struct list_node *prev, *next;
} list_node;

#define LIST_ENTRY(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void list_init(list_node *head) { head->prev = head->next = head; }
static inline int list_empty(const list_node *head) { return head->next == head; }

static inline void list_push_back(list_node *head, list_node *n) {
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void list_remove(list_node *n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* Moves every node of from to the end of to, in order; from is left empty. */
static inline void list_splice_tail(list_node *from, list_node *to) {
    if (list_empty(from)) return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    list_init(from);
}

static inline list_node *list_pop_front(list_node *head) {
    list_node *n = head->next;
    if (n == head) return NULL;
    list_remove(n);
    return n;
}

#endif
