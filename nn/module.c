/*
 * nn/module.c — the module tree (torch.nn.Module's bookkeeping, in C).
 *
 * A module's header holds its named parameters, buffers and children; a
 * parent registers each child once, and every walk derives from that: the
 * parameter list in state_dict order, train/eval, free, full names, and the
 * generic forward. Sequential and ModuleList, the two containers, live here
 * too: they are nothing but a header.
 */
#include "module_util.h"

#include <string.h>

/* ---------------------------------------------------------------- names */

static char *dup_str(const char *s, const char *op)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d)
        tg_error(op, "out of memory");
    memcpy(d, s, n);
    return d;
}

/* "<path>.<name>", or name alone at the root. */
static char *join(const char *path, const char *name, const char *op)
{
    size_t lp = strlen(path), ln = strlen(name);
    char *s = malloc(lp + ln + 2);
    if (!s)
        tg_error(op, "out of memory");
    if (lp) {
        memcpy(s, path, lp);
        s[lp++] = '.';
    }
    memcpy(s + lp, name, ln + 1);
    return s;
}

static const char *type_name(const tg_module *m) { return m->type && m->type->name ? m->type->name : "module"; }

/* How a module is called in messages: "Linear 'trf_blocks.0.att.W_query'". */
static const char *describe(char *buf, size_t size, const tg_module *m)
{
    if (*m->path)
        snprintf(buf, size, "%s '%s'", type_name(m), m->path);
    else
        snprintf(buf, size, "%s (a root)", type_name(m));
    return buf;
}

/* Recomputes the full names of m's tensors from m->path, and the paths of
 * its descendants: after m was attached somewhere. */
static void rename_tree(tg_module *m)
{
    for (int i = 0; i < m->n_params; i++) {
        free(m->params[i].full);
        m->params[i].full = join(m->path, m->params[i].name, "tg_module");
        m->params[i].t->name = m->params[i].full;
    }
    for (int i = 0; i < m->n_buffers; i++) {
        free(m->buffers[i].full);
        m->buffers[i].full = join(m->path, m->buffers[i].name, "tg_module");
        m->buffers[i].t->name = m->buffers[i].full;
    }
    for (int i = 0; i < m->n_children; i++) {
        tg_module *c = m->children[i].m;
        free(c->path);
        c->path = join(m->path, m->children[i].name, "tg_module");
        rename_tree(c);
    }
}

/* A registered name is one attribute: non-empty, no '.', unused in m. */
static void check_new_name(const char *op, const tg_module *m, const char *name)
{
    char d[256];
    tg_check_ptr(op, m, "module");
    tg_check_ptr(op, name, "name");
    if (!*name || strchr(name, '.'))
        tg_error(op, "name \"%s\" for %s must be non-empty and contain no '.'", name, describe(d, sizeof d, m));
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0)
            tg_error(op, "%s already has a parameter named \"%s\"", describe(d, sizeof d, m), name);
    for (int i = 0; i < m->n_buffers; i++)
        if (strcmp(m->buffers[i].name, name) == 0)
            tg_error(op, "%s already has a buffer named \"%s\"", describe(d, sizeof d, m), name);
    for (int i = 0; i < m->n_children; i++)
        if (strcmp(m->children[i].name, name) == 0)
            tg_error(op, "%s already has a child named \"%s\"", describe(d, sizeof d, m), name);
}

/* ---------------------------------------------------------------- the parameter list */

/* Appends m's parameters to list, named relative to the module whose path
 * is base (a prefix of m's). */
static void collect(const tg_module *m, tg_params *list, size_t base)
{
    for (int i = 0; i < m->n_params; i++)
        tg_params_add(list, NULL, m->params[i].full + base, m->params[i].t);
    for (int i = 0; i < m->n_children; i++)
        collect(m->children[i].m, list, base);
}

static void build_list(tg_module *m)
{
    tg_params_free(&m->list);
    collect(m, &m->list, *m->path ? strlen(m->path) + 1 : 0);
    m->list.module = m;
    m->list.generation = m->generation;
    m->list_valid = true;
}

/* A structural change below m: every ancestor's generation moves on, and
 * every list already handed out is rebuilt in place. */
static void changed(tg_module *m)
{
    for (tg_module *a = m; a; a = a->parent) {
        a->generation++;
        if (a->list_valid)
            build_list(a);
    }
}

const tg_params *tg_module_params(tg_module *m)
{
    tg_check_ptr("tg_module_params", m, "module");
    if (!m->list_valid)
        build_list(m);
    return &m->list;
}

uint64_t tg_module_generation(const tg_module *m)
{
    tg_check_ptr("tg_module_generation", m, "module");
    return m->generation;
}

/* ---------------------------------------------------------------- construction */

void *tg_module_new(size_t size, const tg_module_type *type)
{
    tg_check_ptr("tg_module_new", type, "module type");
    if (size < sizeof(tg_module))
        tg_error("tg_module_new", "size %zu of a %s is smaller than its tg_module header (%zu)", size,
                 type->name ? type->name : "module", sizeof(tg_module));
    tg_module *m = tg_nn_alloc(size, "tg_module_new");
    m->type = type;
    m->name = "";
    m->path = dup_str("", "tg_module_new");
    m->training = true;
    tg_params_init(&m->list);
    return m;
}

/* Grows an array of n used, *cap allocated elements of size bytes. */
static void *grow(void *items, int n, int *cap, size_t size, const char *op)
{
    if (n < *cap)
        return items;
    int c = *cap ? *cap * 2 : 4;
    void *p = realloc(items, (size_t)c * size);
    if (!p)
        tg_error(op, "out of memory");
    *cap = c;
    return p;
}

/* The entry holding t somewhere in the tree under m, or NULL. */
static const tg_module_tensor *find_tensor(const tg_module *m, const tg_tensor *t)
{
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].t == t)
            return &m->params[i];
    for (int i = 0; i < m->n_buffers; i++)
        if (m->buffers[i].t == t)
            return &m->buffers[i];
    for (int i = 0; i < m->n_children; i++) {
        const tg_module_tensor *e = find_tensor(m->children[i].m, t);
        if (e)
            return e;
    }
    return NULL;
}

static tg_tensor *add_tensor(const char *op, tg_module *m, const char *name, tg_tensor *t, bool param)
{
    check_new_name(op, m, name);
    tg_check_ptr(op, t, "tensor");
    if (t->storage != TG_STORAGE_HEAP)
        tg_error(op, "\"%s\" must be a heap tensor (the module owns and frees it), not a tape tensor", name);
    const tg_module *root = m;
    while (root->parent)
        root = root->parent;
    const tg_module_tensor *dup = find_tensor(root, t);
    if (dup) /* a module owns (and frees) its tensors: one tensor cannot be registered twice */
        tg_error(op, "the tensor for \"%s\" is already registered as \"%s\"", name, dup->full);
    tg_module_tensor *e;
    if (param) {
        m->params = grow(m->params, m->n_params, &m->cap_params, sizeof *m->params, op);
        e = &m->params[m->n_params++];
    } else {
        m->buffers = grow(m->buffers, m->n_buffers, &m->cap_buffers, sizeof *m->buffers, op);
        e = &m->buffers[m->n_buffers++];
    }
    e->name = dup_str(name, op);
    e->full = join(m->path, name, op);
    e->t = t;
    t->name = e->full;
    if (param)
        tg_requires_grad(t, true);
    changed(m);
    return t;
}

tg_tensor *tg_module_add_param(tg_module *m, const char *name, tg_tensor *t)
{
    return add_tensor("tg_module_add_param", m, name, t, true);
}

tg_tensor *tg_module_add_buffer(tg_module *m, const char *name, tg_tensor *t)
{
    return add_tensor("tg_module_add_buffer", m, name, t, false);
}

/* child must be a root that is not m or one of m's ancestors. */
static void check_new_child(const char *op, const tg_module *m, const tg_module *child)
{
    char d[256], e[256];
    tg_check_ptr(op, child, "child module");
    if (child->parent)
        tg_error(op, "%s already has a parent; a module is registered once", describe(d, sizeof d, child));
    for (const tg_module *a = m; a; a = a->parent)
        if (a == child)
            tg_error(op, "%s cannot be a child of %s, which is inside it", describe(d, sizeof d, child),
                     describe(e, sizeof e, m));
}

static tg_module *add_child(const char *op, tg_module *m, const char *name, tg_module **slot, tg_module *child,
                            bool replaceable, bool needs_forward)
{
    check_new_name(op, m, name);
    check_new_child(op, m, child);
    if (needs_forward && !child->type->forward) {
        char d[256];
        tg_error(op, "slot \"%s\" needs a module with a single-input forward; %s has none", name,
                 describe(d, sizeof d, child));
    }
    m->children = grow(m->children, m->n_children, &m->cap_children, sizeof *m->children, op);
    tg_module_child *c = &m->children[m->n_children++];
    c->name = dup_str(name, op);
    c->m = child;
    c->slot = slot;
    c->replaceable = replaceable;
    c->needs_forward = needs_forward;
    if (slot)
        *slot = child;
    child->parent = m;
    child->name = c->name;
    free(child->path);
    child->path = join(m->path, name, op);
    rename_tree(child);
    changed(m);
    return child;
}

tg_module *tg_module_add_child(tg_module *m, const char *name, tg_module *child)
{
    return add_child("tg_module_add_child", m, name, NULL, child, false, false);
}

tg_module *tg_module_add_slot(tg_module *m, const char *name, tg_module **slot, tg_module *child)
{
    return add_child("tg_module_add_slot", m, name, slot, child, true, true);
}

/* ---------------------------------------------------------------- free */

static void free_tree(tg_module *m)
{
    if (m->type->release)
        m->type->release(m);
    for (int i = 0; i < m->n_children; i++) {
        free_tree(m->children[i].m);
        free(m->children[i].name);
    }
    for (int i = 0; i < m->n_params; i++) {
        tg_free(m->params[i].t);
        free(m->params[i].name);
        free(m->params[i].full);
    }
    for (int i = 0; i < m->n_buffers; i++) {
        tg_free(m->buffers[i].t);
        free(m->buffers[i].name);
        free(m->buffers[i].full);
    }
    free(m->children);
    free(m->params);
    free(m->buffers);
    free(m->path);
    tg_params_free(&m->list);
    free(m);
}

void tg_module_free(tg_module *m)
{
    if (!m)
        return;
    if (m->parent) {
        char d[256];
        tg_error("tg_module_free", "%s belongs to its parent; free the root (or tg_module_replace the slot)",
                 describe(d, sizeof d, m));
    }
    free_tree(m);
}

/* ---------------------------------------------------------------- lookup and replace */

tg_module *tg_module_child_at(const tg_module *m, int i)
{
    tg_check_ptr("tg_module_child_at", m, "module");
    if (i < 0 || i >= m->n_children) {
        char d[256];
        tg_error("tg_module_child_at", "index %d outside the %d children of %s", i, m->n_children,
                 describe(d, sizeof d, m));
    }
    return m->children[i].m;
}

/* The entry of m's child named by path[0..len). */
static tg_module_child *find_child(tg_module *m, const char *name, size_t len)
{
    for (int i = 0; i < m->n_children; i++)
        if (strlen(m->children[i].name) == len && memcmp(m->children[i].name, name, len) == 0)
            return &m->children[i];
    return NULL;
}

/* Walks path; the last component's entry in *entry (NULL for "") and its
 * parent in *parent. Returns false when a component is missing. */
static bool walk(tg_module *m, const char *path, tg_module **parent, tg_module_child **entry)
{
    *parent = NULL;
    *entry = NULL;
    const char *p = path;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        tg_module_child *c = find_child(m, p, len);
        if (!c)
            return false;
        *parent = m;
        *entry = c;
        m = c->m;
        p += len;
        if (*p == '.' && !*++p)
            return false; /* a trailing dot */
    }
    return true;
}

tg_module *tg_module_get(tg_module *m, const char *path)
{
    tg_check_ptr("tg_module_get", m, "module");
    tg_check_ptr("tg_module_get", path, "path");
    tg_module *parent;
    tg_module_child *e;
    if (!walk(m, path, &parent, &e))
        return NULL;
    return e ? e->m : m;
}

void *tg_module_as(tg_module *m, const tg_module_type *t) { return m && m->type == t ? m : NULL; }

void tg_module_replace(tg_module *m, const char *path, tg_module *new_child)
{
    const char *op = "tg_module_replace";
    char d[256], e[256];
    tg_check_ptr(op, m, "module");
    tg_check_ptr(op, path, "path");
    tg_module *parent;
    tg_module_child *c;
    if (!walk(m, path, &parent, &c) || !c)
        tg_error(op, "%s has no child at \"%s\"", describe(d, sizeof d, m), path);
    if (!c->replaceable)
        tg_error(op, "\"%s\" (%s) is a fixed child of %s, not a slot", path, describe(d, sizeof d, c->m),
                 describe(e, sizeof e, parent));
    check_new_child(op, parent, new_child);
    if (c->needs_forward && !new_child->type->forward)
        tg_error(op, "slot \"%s\" needs a module with a single-input forward; %s has none", path,
                 describe(d, sizeof d, new_child));
    tg_module *old = c->m;
    old->parent = NULL; /* detached: tg_module_free accepts it */
    tg_module_free(old);
    c->m = new_child;
    if (c->slot)
        *c->slot = new_child;
    new_child->parent = parent;
    new_child->name = c->name;
    free(new_child->path);
    new_child->path = join(parent->path, c->name, op);
    rename_tree(new_child);
    tg_module_train(new_child, parent->training);
    changed(parent);
}

/* ---------------------------------------------------------------- train/eval and forward */

void tg_module_train(tg_module *m, bool on)
{
    tg_check_ptr("tg_module_train", m, "module");
    m->training = on;
    for (int i = 0; i < m->n_children; i++)
        tg_module_train(m->children[i].m, on);
}

tg_tensor *tg_module_forward(tg_module *m, tg_tensor *x)
{
    tg_check_ptr("tg_module_forward", m, "module");
    if (!m->type->forward) {
        char d[256];
        tg_error("tg_module_forward", "%s has no single-input forward", describe(d, sizeof d, m));
    }
    /* the one place a single-input module's forward is entered: its tape scope */
    tg_module_enter(m);
    tg_tensor *y = m->type->forward(m, x);
    tg_module_leave(m);
    return y;
}

void tg_module_enter(const tg_module *m)
{
    if (m->parent)
        tg_scope_push(m->name);
}

void tg_module_leave(const tg_module *m)
{
    if (m->parent)
        tg_scope_pop();
}

/* ---------------------------------------------------------------- Sequential, ModuleList */

static tg_tensor *sequential_forward(tg_module *m, tg_tensor *x)
{
    tg_nn_check_forward("Sequential", m, x);
    for (int i = 0; i < m->n_children; i++)
        x = tg_module_forward(m->children[i].m, x);
    return x;
}

const tg_module_type tg_sequential_type = {"Sequential", sequential_forward, NULL};
const tg_module_type tg_module_list_type = {"ModuleList", NULL, NULL};

tg_module *tg_sequential_new(void) { return tg_module_new(sizeof(tg_module), &tg_sequential_type); }
tg_module *tg_module_list_new(void) { return tg_module_new(sizeof(tg_module), &tg_module_list_type); }

void tg_module_append(tg_module *container, tg_module *child)
{
    tg_check_ptr("tg_module_append", container, "container");
    if (container->type != &tg_sequential_type && container->type != &tg_module_list_type) {
        char d[256];
        tg_error("tg_module_append", "%s is not a Sequential or ModuleList", describe(d, sizeof d, container));
    }
    char name[16];
    snprintf(name, sizeof name, "%d", container->n_children);
    /* a Sequential runs its entries; a ModuleList's need no forward */
    add_child("tg_module_append", container, name, NULL, child, true, container->type == &tg_sequential_type);
}
