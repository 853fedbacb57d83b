/* exchange.journal._accel: the journal's hot paths in C - the record encoder, the Submitter
 * (CoreRunner's submit path) and the snapshot's orders (rows_json). Each has a pure-Python
 * reference implementation that gives the same results (exchange/journal/codec.py:
 * payload_line; exchange/journal/runner.py: the Python submitter, Order.to_state), used where this
 * extension is not built or a value is not a plain one; tests/test_journal_hotpath.py
 * compares them.
 *
 * append_line(buf, cmd) -> bool
 *     Append cmd's journal payload and a newline to the bytearray buf, exactly the bytes
 *     exchange.journal.codec.payload_line(cmd) returns (orjson of the tuple
 *     (TYPE, field1, field2, ...) plus b"\n"), and return True. Return False, with buf
 *     untouched, when this encoder does not take the command: its class is not registered
 *     here, or one of its values is not one of the plain kinds below. The caller then uses
 *     payload_line, the reference implementation (codec.py).
 *
 * register(cls, head, names)
 *     head: the bytes '["<type>"' that open every payload of cls; names: cls._FIELDS as a
 *     tuple of str. codec.py registers every command class.
 *
 * Values written here, each in the form orjson writes it: None -> null, True/False ->
 * true/false, an exact int that fits in 64 bits signed -> its decimal digits, an exact str of
 * printable ASCII other than '"' and '\\' -> the characters in quotes. Anything else (a
 * tuple, a float, a non-ASCII or escaped string, an int subclass, a big int) is left to
 * orjson through the fallback, so no JSON rule is re-implemented here beyond those.
 *
 * Submitter: CoreRunner.submit_nowait (envelope, encode the record, apply, frame) - see
 * the Python submitter in runner.py for what each step does; this is the same, step for step. It
 * calls the Exchange's apply (the core's own extension, exchange.core._accel, when that is
 * built) through Python's call protocol, so the two extensions need no C-level link.
 *
 * rows_json(groups, cls, names): below, where it is defined.
 *
 * Module: multi-phase initialisation (PEP 489) with everything it keeps - the registry,
 * interned names, time.time_ns, the Submitter type - in the module's state (ADR 0013), so
 * each interpreter that imports it has its own.
 *
 * Why it exists: the encoder and the Submitter run once for every command the exchange
 * accepts, on the core's thread, and in Python they cost the core ~0.65 us a command against
 * ~3.7 us for apply itself (ADR 0002, "The submit path in C").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <time.h>

#define MAX_FIELDS 32

#include "../_jsonw.h"

/* The module's state: what a process global would otherwise hold. */
typedef struct {
    /* dict: class -> bytes: a struct entry. The fields of a registered class are slots
     * (member descriptors of kind T_OBJECT_EX), read and written at their offsets, as the
     * interpreter's own specialised LOAD_ATTR_SLOT does; the generic attribute API costs
     * ~25 ns a field. */
    PyObject *registry;
    PyObject *str_last_seq, *str_first_seq;
    PyObject *time_ns; /* time.time_ns: a Submitter whose clock it is reads the clock itself */
    PyTypeObject *submitter_type;
} jstate;

static struct PyModuleDef module_def;

static inline jstate *
state_of(PyObject *module)
{
    return (jstate *)PyModule_GetState(module);
}

typedef struct {
    Py_ssize_t nfields;
    Py_ssize_t head_len;
    Py_ssize_t off[MAX_FIELDS];
    char head[]; /* '["<type>"' */
} entry_t;

static const entry_t *
entry_of(jstate *st, PyObject *cmd)
{
    /* the registered entry of cmd's exact class, or NULL (no error set unless one occurred) */
    PyObject *e = PyDict_GetItemWithError(st->registry, (PyObject *)Py_TYPE(cmd));
    return e == NULL ? NULL : (const entry_t *)PyBytes_AS_STRING(e);
}

static Py_ssize_t
classify_slots(PyObject *obj, const Py_ssize_t *off, Py_ssize_t nf, item *items)
{
    /* obj's nf slots at off[] classified into items (borrowed: obj holds the values); the
     * bytes their JSON takes, or -1 when one is unset or not a plain value */
    Py_ssize_t len = 0;
    for (Py_ssize_t k = 0; k < nf; k++) {
        PyObject *v = *(PyObject **)((char *)obj + off[k]);
        if (v == NULL || !classify(v, &items[k]))
            return -1;
        len += items[k].n;
    }
    return len;
}

static char *
write_values(char *p, const item *items, Py_ssize_t nf)
{
    /* "v1,v2,...,vn" at p; returns the end */
    for (Py_ssize_t k = 0; k < nf; k++) {
        if (k)
            *p++ = ',';
        write_item(p, &items[k]);
        p += items[k].n;
    }
    return p;
}

static int
names_offsets(PyTypeObject *cls, PyObject *names, Py_ssize_t *off, const char *who)
{
    /* off[k]: the slot offset of cls's names[k] (a tuple of at most MAX_FIELDS str);
     * 1: all plain slots; 0: not (not taken here); -1: error set */
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n > MAX_FIELDS)
        return 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *name = PyTuple_GET_ITEM(names, k);
        if (!PyUnicode_CheckExact(name)) {
            PyErr_Format(PyExc_TypeError, "%s: names must be a tuple of str", who);
            return -1;
        }
        off[k] = slot_offset(cls, name);
        if (off[k] == 0)
            return 0;
    }
    return 1;
}

/* 1: appended; 0: not taken (buf untouched); -1: error set */
static int
append_line_impl(jstate *st, PyObject *buf, PyObject *cmd)
{
    const entry_t *e = entry_of(st, cmd);
    if (e == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t nf = e->nfields;
    item items[MAX_FIELDS];
    Py_ssize_t vlen = classify_slots(cmd, e->off, nf, items);
    if (vlen < 0)
        return 0; /* unset (the reference encoder raises), or not a plain value */
    /* head, a comma before the values (when there are any), the values, "]\n" */
    Py_ssize_t start = PyByteArray_GET_SIZE(buf);
    if (PyByteArray_Resize(buf, start + e->head_len + nf + vlen + 2) < 0)
        return -1;
    char *p = PyByteArray_AS_STRING(buf) + start;
    memcpy(p, e->head, e->head_len);
    p += e->head_len;
    if (nf)
        *p++ = ',';
    p = write_values(p, items, nf);
    p[0] = ']';
    p[1] = '\n';
    return 1;
}

static PyObject *
append_line(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "append_line(buf, cmd) takes two arguments");
        return NULL;
    }
    if (!PyByteArray_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "append_line: buf must be a bytearray");
        return NULL;
    }
    int r = append_line_impl(state_of(self), args[0], args[1]);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
reg(PyObject *self, PyObject *args)
{
    PyObject *cls, *head, *names;
    if (!PyArg_ParseTuple(args, "O!SO!:register", &PyType_Type, &cls, &head, &PyTuple_Type,
                          &names))
        return NULL;
    PyObject *blob = PyBytes_FromStringAndSize(NULL, sizeof(entry_t) + PyBytes_GET_SIZE(head));
    if (blob == NULL)
        return NULL;
    entry_t *e = (entry_t *)PyBytes_AS_STRING(blob);
    e->nfields = PyTuple_GET_SIZE(names);
    e->head_len = PyBytes_GET_SIZE(head);
    memcpy(e->head, PyBytes_AS_STRING(head), e->head_len);
    int plain = names_offsets((PyTypeObject *)cls, names, e->off, "register");
    if (plain <= 0) { /* not plain slots: the reference encoder serves this class */
        Py_DECREF(blob);
        if (plain < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    jstate *st = state_of(self);
    int r = PyDict_SetItem(st->registry, cls, blob);
    Py_DECREF(blob);
    if (r < 0)
        return NULL;
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------------- rows_json */

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} sbuf;

static int
sbuf_reserve(sbuf *b, Py_ssize_t more)
{
    if (b->n + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* rows_json(groups, cls, names) -> bytes | None
 *     The JSON array of [obj.<name> for name in names] for every obj of every iterable in
 *     groups, in order - orjson's bytes for that list of lists - or None when an object is
 *     not exactly a cls, or a value is not a plain one (see classify): then the caller builds
 *     the lists in Python. cls's names must be slots. */
static PyObject *
rows_json(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *groups, *cls, *names;
    if (!PyArg_ParseTuple(args, "OO!O!:rows_json", &groups, &PyType_Type, &cls, &PyTuple_Type,
                          &names))
        return NULL;
    Py_ssize_t nf = PyTuple_GET_SIZE(names);
    Py_ssize_t off[MAX_FIELDS];
    int r = names_offsets((PyTypeObject *)cls, names, off, "rows_json");
    if (r < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    PyObject *outer = PyObject_GetIter(groups);
    if (outer == NULL)
        return NULL;
    sbuf b = {NULL, 0, 0};
    int plain = 1;
    PyObject *group;
    if (sbuf_reserve(&b, 1) < 0)
        goto error;
    b.p[b.n++] = '[';
    while (plain && (group = PyIter_Next(outer)) != NULL) {
        PyObject *inner = PyObject_GetIter(group);
        Py_DECREF(group);
        if (inner == NULL)
            goto error;
        PyObject *obj;
        while ((obj = PyIter_Next(inner)) != NULL) {
            item items[MAX_FIELDS];
            Py_ssize_t vlen = -1;
            if ((PyObject *)Py_TYPE(obj) == cls)
                vlen = classify_slots(obj, off, nf, items);
            if (vlen < 0) {
                plain = 0;
                Py_DECREF(obj);
                break;
            }
            /* "[values]," (commas between the values, one after the row) */
            if (sbuf_reserve(&b, vlen + nf + 3) < 0) {
                Py_DECREF(obj);
                Py_DECREF(inner);
                goto error;
            }
            char *p = b.p + b.n;
            *p++ = '[';
            p = write_values(p, items, nf);
            *p++ = ']';
            *p++ = ',';
            b.n = p - b.p;
            Py_DECREF(obj); /* the values were copied: borrowed reads end here */
        }
        Py_DECREF(inner);
        if (PyErr_Occurred())
            goto error;
    }
    Py_DECREF(outer);
    outer = NULL;
    if (PyErr_Occurred())
        goto error;
    if (!plain) {
        PyMem_Free(b.p);
        Py_RETURN_NONE;
    }
    if (b.p[b.n - 1] == ',')
        b.n--; /* the last row's comma */
    if (sbuf_reserve(&b, 1) < 0)
        goto error;
    b.p[b.n++] = ']';
    PyObject *out = PyBytes_FromStringAndSize(b.p, b.n);
    PyMem_Free(b.p);
    return out;
error:
    Py_XDECREF(outer);
    PyMem_Free(b.p);
    return NULL;
}

/* ------------------------------------------------------------------------- Submitter */

typedef struct {
    PyObject_HEAD
    jstate *st; /* the module's state (the type holds the module, the object its type) */
    /* set once by the runner */
    PyObject *ex;            /* the Exchange: its last_seq is read for every command */
    PyObject *apply;         /* ex.apply */
    PyObject *clock;         /* () -> int nanoseconds */
    PyObject *fallback_line; /* cmd -> bytes: the reference encoder (codec.payload_line) */
    PyObject *on_first;      /* () : the first record entered the batch (wakes the commit loop) */
    PyObject *on_snapshot;   /* () : since_snapshot reached snapshot_every */
    PyObject *on_error;      /* (cmd, seq, exc) : apply raised an Exception (logged; journaled) */
    PyObject *refuse;        /* () : raises RunnerFailed (not accepting) */
    PyObject *seq_error;     /* SequenceError: re-raised, not journaled */
    /* the current batch, set by the runner each time it opens one */
    PyObject *frames;        /* Frames: first_seq is set on its first record */
    PyObject *lines;         /* frames.lines (bytearray) */
    PyObject *stamps;        /* frames.ts (a bytearray of native int64s) */
    PyObject *future;        /* the batch's durability future */
    PyObject *applied;       /* list of (cmd, seq, ts, events) for the listeners, or None */
    /* counters */
    long long last_ts;
    long long since_snapshot;
    long long snapshot_every;
    char accepting;
} Submitter;


static int
sub_traverse(Submitter *s, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(s)); /* a heap type: its instances keep it alive */
    Py_VISIT(s->ex);
    Py_VISIT(s->apply);
    Py_VISIT(s->clock);
    Py_VISIT(s->fallback_line);
    Py_VISIT(s->on_first);
    Py_VISIT(s->on_snapshot);
    Py_VISIT(s->on_error);
    Py_VISIT(s->refuse);
    Py_VISIT(s->seq_error);
    Py_VISIT(s->frames);
    Py_VISIT(s->lines);
    Py_VISIT(s->stamps);
    Py_VISIT(s->future);
    Py_VISIT(s->applied);
    return 0;
}

static int
sub_clear(Submitter *s)
{
    Py_CLEAR(s->ex);
    Py_CLEAR(s->apply);
    Py_CLEAR(s->clock);
    Py_CLEAR(s->fallback_line);
    Py_CLEAR(s->on_first);
    Py_CLEAR(s->on_snapshot);
    Py_CLEAR(s->on_error);
    Py_CLEAR(s->refuse);
    Py_CLEAR(s->seq_error);
    Py_CLEAR(s->frames);
    Py_CLEAR(s->lines);
    Py_CLEAR(s->stamps);
    Py_CLEAR(s->future);
    Py_CLEAR(s->applied);
    return 0;
}

static void
sub_dealloc(Submitter *s)
{
    PyTypeObject *tp = Py_TYPE(s);
    PyObject_GC_UnTrack(s);
    sub_clear(s);
    tp->tp_free((PyObject *)s);
    Py_DECREF(tp);
}

static PyObject *
sub_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    /* the module's state is found once, here, and kept: submit reads it on every command */
    PyObject *module = PyType_GetModuleByDef(type, &module_def);
    if (module == NULL)
        return NULL;
    Submitter *s = (Submitter *)PyType_GenericNew(type, args, kw);
    if (s != NULL)
        s->st = state_of(module);
    return (PyObject *)s;
}

static int
sub_ready(Submitter *s)
{
    if (!s->ex || !s->apply || !s->clock || !s->fallback_line || !s->on_first ||
        !s->on_snapshot || !s->on_error || !s->refuse || !s->seq_error || !s->frames ||
        !s->lines || !s->stamps || !s->future || !s->applied) {
        PyErr_SetString(PyExc_RuntimeError, "Submitter used before the runner set it up");
        return 0;
    }
    if (!PyByteArray_CheckExact(s->lines) || !PyByteArray_CheckExact(s->stamps)) {
        PyErr_SetString(PyExc_TypeError, "Submitter.lines and .stamps must be bytearrays");
        return 0;
    }
    return 1;
}

/* submit(cmd) -> (events, future): the steps of the Python submitter's submit, in order */
static PyObject *
sub_submit(Submitter *s, PyObject *cmd)
{
    if (!s->accepting) {
        if (s->refuse) {
            PyObject *r = PyObject_CallNoArgs(s->refuse);
            Py_XDECREF(r);
            if (r == NULL)
                return NULL;
        }
        PyErr_SetString(PyExc_RuntimeError, "runner not accepting commands");
        return NULL;
    }
    if (!sub_ready(s))
        return NULL;
    jstate *st = s->st;
    /* the envelope, kept beside the command (never written onto it): seq = ex.last_seq + 1 */
    PyObject *last = PyObject_GetAttr(s->ex, st->str_last_seq);
    if (last == NULL)
        return NULL;
    long long last_seq = PyLong_AsLongLong(last);
    Py_DECREF(last);
    if (last_seq == -1 && PyErr_Occurred())
        return NULL;
    PyObject *seq = PyLong_FromLongLong(last_seq + 1);
    if (seq == NULL)
        return NULL;
    /* ts = clock(), strictly after the last one */
    long long ts;
    struct timespec now;
    if (s->clock == st->time_ns && clock_gettime(CLOCK_REALTIME, &now) == 0) {
        /* time.time_ns, without the call: the same clock_gettime(CLOCK_REALTIME) */
        ts = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
    }
    else {
        PyObject *t = PyObject_CallNoArgs(s->clock);
        if (t == NULL)
            goto fail_seq;
        ts = PyLong_AsLongLong(t);
        Py_DECREF(t);
        if (ts == -1 && PyErr_Occurred())
            goto fail_seq;
    }
    if (ts <= s->last_ts)
        ts = s->last_ts + 1;
    s->last_ts = ts;
    PyObject *tso = PyLong_FromLongLong(ts);
    if (tso == NULL)
        goto fail_seq;
    /* the record's payload first: a command that cannot be encoded is refused before the
     * core sees it, and the journal holds the command as submitted */
    PyObject *lines = s->lines;
    Py_ssize_t lines_before = PyByteArray_GET_SIZE(lines);
    int took = append_line_impl(st, lines, cmd);
    if (took < 0)
        goto fail_ts;
    if (!took) {
        PyObject *line = PyObject_CallOneArg(s->fallback_line, cmd);
        if (line == NULL)
            goto fail_ts;
        PyObject *grown = PySequence_InPlaceConcat(lines, line);
        Py_DECREF(line);
        if (grown == NULL)
            goto fail_ts;
        Py_DECREF(grown);
    }
    /* result = apply(cmd, seq, ts); an Exception other than SequenceError is logged and journaled;
     * a SequenceError (or a BaseException) takes the payload back out and propagates */
    PyObject *argv[3] = {cmd, seq, tso};
    PyObject *result = PyObject_Vectorcall(s->apply, argv, 3, NULL);
    if (result == NULL) {
        if (PyErr_ExceptionMatches(s->seq_error) || !PyErr_ExceptionMatches(PyExc_Exception))
            goto fail_unframe;
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL)
            PyException_SetTraceback(value, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        result = value; /* the exception stands in for the events */
        PyObject *r = PyObject_CallFunctionObjArgs(s->on_error, cmd, seq, result, NULL);
        if (r == NULL) {
            Py_DECREF(result);
            goto fail_unframe;
        }
        Py_DECREF(r);
    }
    /* the stamp: 8 native bytes at the end of the bytearray Frames.ts */
    PyObject *stamps = s->stamps, *r;
    Py_ssize_t ns = PyByteArray_GET_SIZE(stamps);
    if (PyByteArray_Resize(stamps, ns + 8) < 0) {
        Py_DECREF(result);
        goto fail_unframe;
    }
    memcpy(PyByteArray_AS_STRING(stamps) + ns, &ts, 8);
    if (ns == 0) { /* the batch's first record */
        if (PyObject_SetAttr(s->frames, st->str_first_seq, seq) < 0)
            goto fail_result;
        r = PyObject_CallNoArgs(s->on_first);
        if (r == NULL)
            goto fail_result;
        Py_DECREF(r);
    }
    if (s->applied != Py_None) {
        PyObject *pair = PyTuple_Pack(4, cmd, seq, tso, result);
        if (pair == NULL)
            goto fail_result;
        int a = PyList_Append(s->applied, pair);
        Py_DECREF(pair);
        if (a < 0)
            goto fail_result;
    }
    /* the future of this batch, taken before a snapshot (which may not swap it anyway) */
    PyObject *future = s->future;
    Py_INCREF(future);
    s->since_snapshot += 1;
    if (s->since_snapshot >= s->snapshot_every) {
        r = PyObject_CallNoArgs(s->on_snapshot);
        if (r == NULL) {
            Py_DECREF(future);
            goto fail_result;
        }
        Py_DECREF(r);
    }
    Py_DECREF(seq);
    Py_DECREF(tso);
    PyObject *out = PyTuple_New(2);
    if (out == NULL) {
        Py_DECREF(result);
        Py_DECREF(future);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, result);
    PyTuple_SET_ITEM(out, 1, future);
    return out;

fail_result:
    Py_DECREF(result);
    goto fail_ts;
fail_unframe: {
    /* keep the batch's payloads and stamps in step: drop this command's payload */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyByteArray_Resize(lines, lines_before) < 0)
        PyErr_Clear(); /* a shrink; the error being raised is the one to report */
    PyErr_Restore(type, value, tb);
}
fail_ts:
    Py_DECREF(tso);
fail_seq:
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef sub_methods[] = {
    {"submit", (PyCFunction)sub_submit, METH_O,
     "submit(cmd) -> (events, durable_future): give cmd its envelope, apply and frame it."},
    {NULL, NULL, 0, NULL},
};

#define OBJ_MEMBER(name) {#name, T_OBJECT_EX, offsetof(Submitter, name), 0, NULL}
static PyMemberDef sub_members[] = {
    OBJ_MEMBER(ex), OBJ_MEMBER(apply), OBJ_MEMBER(clock), OBJ_MEMBER(fallback_line),
    OBJ_MEMBER(on_first), OBJ_MEMBER(on_snapshot), OBJ_MEMBER(on_error), OBJ_MEMBER(refuse),
    OBJ_MEMBER(seq_error), OBJ_MEMBER(frames), OBJ_MEMBER(lines), OBJ_MEMBER(stamps),
    OBJ_MEMBER(future), OBJ_MEMBER(applied),
    {"last_ts", T_LONGLONG, offsetof(Submitter, last_ts), 0, NULL},
    {"since_snapshot", T_LONGLONG, offsetof(Submitter, since_snapshot), 0, NULL},
    {"snapshot_every", T_LONGLONG, offsetof(Submitter, snapshot_every), 0, NULL},
    {"accepting", T_BOOL, offsetof(Submitter, accepting), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot sub_slots[] = {
    {Py_tp_doc, "CoreRunner's submit path: envelope, apply and frame each command (see "
                "runner.py's Python submitter, the reference implementation)."},
    {Py_tp_new, sub_new},
    {Py_tp_traverse, sub_traverse},
    {Py_tp_clear, sub_clear},
    {Py_tp_dealloc, sub_dealloc},
    {Py_tp_methods, sub_methods},
    {Py_tp_members, sub_members},
    {0, NULL},
};

static PyType_Spec sub_spec = {
    .name = "exchange.journal._accel.Submitter",
    .basicsize = sizeof(Submitter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = sub_slots,
};

static PyMethodDef methods[] = {
    {"append_line", (PyCFunction)(void (*)(void))append_line, METH_FASTCALL,
     "append_line(buf, cmd) -> bool: append cmd's payload line to buf, or return False "
     "(buf untouched) when the reference encoder must do it."},
    {"rows_json", rows_json, METH_VARARGS,
     "rows_json(groups, cls, names) -> bytes | None: the JSON list of [obj.<name>, ...] for "
     "every obj of every iterable in groups (None: not plain; build it in Python)."},
    {"register", reg, METH_VARARGS,
     "register(cls, head, names) -> bool: take cls's commands (head: b'[\"<type>\"')."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *m)
{
    jstate *st = state_of(m);
    if ((st->registry = PyDict_New()) == NULL ||
        PyModule_AddObjectRef(m, "registry", st->registry) < 0)
        return -1;
    if (!(st->str_last_seq = PyUnicode_InternFromString("last_seq")) ||
        !(st->str_first_seq = PyUnicode_InternFromString("first_seq")))
        return -1;
    PyObject *time_mod = PyImport_ImportModule("time");
    if (time_mod == NULL)
        return -1;
    st->time_ns = PyObject_GetAttrString(time_mod, "time_ns");
    Py_DECREF(time_mod);
    if (st->time_ns == NULL)
        return -1;
    st->submitter_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &sub_spec, NULL);
    if (st->submitter_type == NULL)
        return -1;
    return PyModule_AddType(m, st->submitter_type);
}

static int
module_traverse(PyObject *m, visitproc visit, void *arg)
{
    jstate *st = state_of(m);
    Py_VISIT(st->registry);
    Py_VISIT(st->str_last_seq);
    Py_VISIT(st->str_first_seq);
    Py_VISIT(st->time_ns);
    Py_VISIT(st->submitter_type);
    return 0;
}

static int
module_clear(PyObject *m)
{
    jstate *st = state_of(m);
    Py_CLEAR(st->registry);
    Py_CLEAR(st->str_last_seq);
    Py_CLEAR(st->str_first_seq);
    Py_CLEAR(st->time_ns);
    Py_CLEAR(st->submitter_type);
    return 0;
}

static void
module_free(void *m)
{
    module_clear((PyObject *)m);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    /* nothing is shared between interpreters: every object lives in the module's state */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "exchange.journal._accel",
    .m_doc = "The journal's hot paths in C: the record encoder, the Submitter and the "
             "snapshot's orders.",
    .m_size = sizeof(jstate),
    .m_methods = methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__accel(void)
{
    return PyModuleDef_Init(&module_def);
}
