/* exchange._hotpath.gate: the websocket gateway's order requests in C.
 *
 * gate(session, request) -> bool
 *     Session.on_request's work for a well-formed place_order, cancel_order or amend_order
 *     from an authenticated firm (exchange/server/gateway.py: on_request, the method's
 *     validator in protocol.py, m_place/m_cancel/m_amend, Gateway.place, admit,
 *     order_command, submit_nowait, _place_reply, _report_reply, _enqueue), step for step:
 *     the command is built, submitted to the runner, its reply built now and queued for when
 *     the command's journal batch is durable. Returns True when it did that, False - having
 *     changed nothing - for anything else: another method, a request or params that are not
 *     plainly well-formed (every error message is the Python path's), a session over its
 *     rate limit, a client order id seen before (the idempotency rules), a runner not
 *     accepting. on_request then handles the request in Python, the reference, as if this
 *     had not been called. A well-formed order that admission control refuses is answered
 *     here (Gateway.overloaded gives the error): past saturation a refusal that cost more
 *     than an order would leave the server ever further behind.
 *
 *     After the command is submitted nothing falls back: a reply that is not plain (a string
 *     that needs escaping, a number beyond 64 bits, events of an unusual shape) is built by
 *     the Python function itself (Gateway._place_reply, gateway._report_reply), and a refused
 *     submit is reported by Gateway.submit_failed, as in Python.
 *
 * gate_setup(cfg: dict) names the classes and constants (gateway.py calls it at import).
 *
 * Why it exists: ADR 0003, "the order requests in C". The Python path is ~10 function calls
 * and ~40 attribute reads a request on the server's one thread, which is what limits the
 * served exchange's throughput once the core and the journal's submit path are compiled.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../_jsonw.h"

/* ------------------------------------------------------------------ configuration */

enum { S_CRED, S_FIRM, S_ROLE, S_COD, S_OUT, S_CLOSED, S_TOKENS, S_PLACED, S_REQ_ID, S_GW,
       S_SUBS, S_FLUSHING, S_QMAX, S_N };
static const char *const sess_names[S_N] = {"cred", "firm_id", "role", "cod", "out", "closed",
                                            "tokens", "placed", "req_id", "gw", "subs",
                                            "flushing", "qmax"};
/* the commands' fields (their envelope, seq and ts, is the runner's, not the command's) */
enum { PL_ACCOUNT, PL_INSTRUMENT, PL_SEGMENT, PL_SIDE, PL_QTY, PL_PRICE, PL_TYPE, PL_TIF,
       PL_POST_ONLY, PL_COID, PL_N };
static const char *const place_names[PL_N] = {
    "account", "instrument", "segment", "side", "qty", "price", "order_type", "tif",
    "post_only", "client_order_id"};
enum { CA_ACCOUNT, CA_OID, CA_COID, CA_N };
static const char *const cancel_names[CA_N] = {"account", "order_id", "client_order_id"};
enum { AM_ACCOUNT, AM_OID, AM_COID, AM_QTY, AM_PRICE, AM_N };
static const char *const amend_names[AM_N] = {"account", "order_id", "client_order_id", "qty",
                                              "price"};
enum { R_ACCOUNT, R_OID, R_COID, R_EXEC_TYPE, R_STATUS, R_QTY, R_PRICE, R_CUM, R_LEAVES, R_N };
static const char *const er_names[R_N] = {"account", "order_id", "client_order_id",
                                          "exec_type", "order_status", "qty", "price",
                                          "cum_qty", "leaves_qty"};


/* interned names and constants */
enum { I_REQ_ID, I_METHOD, I_PARAMS, I_PLACE, I_CANCEL, I_AMEND, I_INSTRUMENT, I_SIDE, I_QTY,
       I_SEGMENT, I_PRICE, I_ORDER_TYPE, I_TIF, I_POST_ONLY, I_COID, I_OID, I_BUY, I_SELL,
       I_MAIN, I_LIMIT, I_MARKET, I_GTC, I_DAY, I_IOC, I_FOK, I_ACCEPTING, I_RUNNER, I_IDEM,
       I_METRICS, I_EX, I_MAX_IN_FLIGHT, I_OVERLOAD_QUEUE, I_BATCH_FUTURE, I_BATCH,
       I_JOURNAL_LAG, I_SUBMIT_NOWAIT, I_DONE, I_INFLIGHT, I_ACCOUNTS, I_COIDS,
       I_MESSAGES_IN, I_SUBMIT_FAILED, I_ERROR, I_CODE, I_MESSAGE, I_PLACE_REPLY, I_ENQUEUE,
       I_TYPE, I_JOURNAL_LAG_SECONDS, I_MAX_LAG_S, I_OVERLOADED, I_OVERLOADED_BY,
       I_GATEWAY_ERRORS, I_REJECTS, I_LAST_SEQ, I_N };
static const char *const inames[I_N] = {
    "req_id", "method", "params", "place_order", "cancel_order", "amend_order", "instrument",
    "side", "qty", "segment", "price", "order_type", "tif", "post_only", "client_order_id",
    "order_id", "buy", "sell", "main", "limit", "market", "GTC", "DAY", "IOC", "FOK",
    "accepting", "runner", "idem", "metrics", "ex", "_max_in_flight", "_overload_queue",
    "_batch_future", "_batch", "journal_lag", "submit_nowait", "done", "inflight", "accounts",
    "coids", "messages_in", "submit_failed", "error", "code", "message", "_place_reply",
    "_enqueue", "TYPE", "journal_lag_seconds", "_max_lag_s", "overloaded", "overloaded_by",
    "gateway_errors", "rejects", "last_seq"};

#define SL(o, off) (*(PyObject **)((char *)(o) + (off)))

/* fanout's names */
enum { F_EXEC_SUBS, F_BAL_SUBS, F_DIRTY_BAL, F_ER_HEADS, F_BOOK_SUBS, F_TICKER_SUBS,
       F_TRADE_SUBS, F_DIRTY_TICK, F_METRICS, F_COMMANDS, F_TRADES, F_ORDERS, F_ON_REPORT,
       F_ON_EVENT, F_ON_COMMIT, F_DIRTY_SOON, F_QUEUED, F_SEND, F_EXECUTIONS,
       F_PROCEEDS_SPLIT, F_N };
static const char *const fnames[F_N] = {
    "exec_subs", "bal_subs", "_dirty_bal", "_er_heads", "book_subs", "ticker_subs",
    "trade_subs", "_dirty_tick", "metrics", "commands", "trades", "orders", "_on_report",
    "_on_event", "on_commit", "_dirty_soon", "_queued", "send", "executions",
    "proceeds_split"};
/* replies' names (below) */
enum { D_DONE, D_INFLIGHT, D_RING, D_WINDOW, D_N };
static const char *const dnames[D_N] = {"done", "inflight", "ring", "window"};
/* The execution report's fields after the order's fixed ones, in the order of
 * exchange.server.protocol.ER_TAIL. */
enum { ER_EXEC_TYPE, ER_ORDER_STATUS, ER_PRICE, ER_QTY, ER_LAST_QTY, ER_LAST_PX, ER_CUM_QTY,
       ER_LEAVES_QTY, ER_REASON, ER_TRADE_ID, ER_FEE, ER_LIQUIDITY, ER_TS, ER_N };
static const char *const push_names[ER_N] = {
    "exec_type", "order_status", "price", "qty", "last_qty", "last_px", "cum_qty",
    "leaves_qty", "reason", "trade_id", "fee", "liquidity", "ts"};

/* The module's state: everything the functions keep between calls. gate_setup and
 * fanout_setup fill in the classes and constants; the names and small ints are made when
 * the module is. */
typedef struct {
    /* gate_setup */
    PyTypeObject *sess_t, *place_t, *cancel_t, *amend_t, *er_t, *rejected_t;
    Py_ssize_t sess_off[S_N], place_off[PL_N], cancel_off[CA_N], amend_off[AM_N], er_off[R_N];
    PyObject *prices;        /* protocol._PRICES: price string -> fen */
    PyObject *role_firm;     /* credentials.ROLE_FIRM */
    PyObject *exec_rejected; /* events.EXEC_REJECTED */
    PyObject *report_reply;  /* gateway._report_reply (the reference, for the odd cases) */
    int ready;
    /* fanout_setup */
    PyTypeObject *bu_t, *trade_t;
    PyObject *er_head_fn, *er_push_fn; /* protocol.er_head, protocol.er_push_ref */
    Py_ssize_t heads_max;
    int fan_ready;
    /* er_push: the class push_off belongs to (a reference held, so its address cannot be
     * reused by another class) */
    PyTypeObject *push_cls;
    Py_ssize_t push_off[ER_N];
    /* made with the module */
    PyObject *zero; /* 0 */
    PyObject *one_; /* 1 */
    PyObject *I[I_N], *F[F_N], *D[D_N];
    PyObject *s_cancelled, *s_exception, *s_append, *s_popleft, *s_idem, *s_batch_durable;
} gstate;

static struct PyModuleDef module_def;

static inline gstate *
state_of(PyObject *module)
{
    return (gstate *)PyModule_GetState(module);
}


static int
offsets(PyTypeObject *t, const char *const *names, int n, Py_ssize_t *off)
{
    int r = slot_offsets(t, names, n, off);
    if (r == 0)
        PyErr_Format(PyExc_TypeError, "gate_setup: %s has a field that is not a slot",
                     t->tp_name);
    return r > 0 ? 0 : -1;
}

static PyObject *
gate_setup(PyObject *self, PyObject *cfg)
{
    gstate *st = state_of(self);
    static const char *const keys[] = {"Session", "PlaceOrder", "CancelOrder", "AmendOrder",
                                       "ExecutionReport", "CommandRejected", "prices",
                                       "ROLE_FIRM", "EXEC_REJECTED", "report_reply"};
    PyObject *v[10];
    if (!PyDict_Check(cfg)) {
        PyErr_SetString(PyExc_TypeError, "gate_setup(dict)");
        return NULL;
    }
    for (int k = 0; k < 10; k++) {
        v[k] = PyDict_GetItemString(cfg, keys[k]);
        if (v[k] == NULL || (k < 6 && !PyType_Check(v[k]))) {
            PyErr_Format(PyExc_KeyError, "gate_setup: %s", keys[k]);
            return NULL;
        }
    }
    if (!PyDict_Check(v[6])) {
        PyErr_SetString(PyExc_TypeError, "gate_setup: prices is not a dict");
        return NULL;
    }
    st->ready = 0;
    if (offsets((PyTypeObject *)v[0], sess_names, S_N, st->sess_off) < 0 ||
        offsets((PyTypeObject *)v[1], place_names, PL_N, st->place_off) < 0 ||
        offsets((PyTypeObject *)v[2], cancel_names, CA_N, st->cancel_off) < 0 ||
        offsets((PyTypeObject *)v[3], amend_names, AM_N, st->amend_off) < 0 ||
        offsets((PyTypeObject *)v[4], er_names, R_N, st->er_off) < 0)
        return NULL;
    PyTypeObject **types[] = {&st->sess_t, &st->place_t, &st->cancel_t, &st->amend_t, &st->er_t,
                              &st->rejected_t};
    for (int k = 0; k < 6; k++)
        Py_XSETREF(*types[k], (PyTypeObject *)Py_NewRef(v[k]));
    Py_XSETREF(st->prices, Py_NewRef(v[6]));
    Py_XSETREF(st->role_firm, Py_NewRef(v[7]));
    Py_XSETREF(st->exec_rejected, Py_NewRef(v[8]));
    Py_XSETREF(st->report_reply, Py_NewRef(v[9]));
    st->ready = 1;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ small helpers */

static inline int
short_str(PyObject *v)
{
    /* type(v) is str and 0 < len(v) <= 64 */
    return PyUnicode_CheckExact(v) && PyUnicode_GET_LENGTH(v) > 0 &&
           PyUnicode_GET_LENGTH(v) <= 64;
}

static inline int
int64(PyObject *v)
{
    /* type(v) is int and INT64_MIN <= v <= INT64_MAX (protocol.Int64, order_model.INT64) */
    int over;
    return PyLong_CheckExact(v) && (PyLong_AsLongLongAndOverflow(v, &over) != -1 || !over);
}

static inline PyObject *
dget(gstate *st, PyObject *d, int name)
{
    /* d.get(name), borrowed; NULL: absent (an error is cleared: str keys cannot raise) */
    PyObject *v = PyDict_GetItemWithError(d, st->I[name]);
    if (v == NULL && PyErr_Occurred())
        PyErr_Clear();
    return v;
}

static PyObject *
attr(gstate *st, PyObject *o, int name)
{
    /* o.<name>, a new reference; NULL with no error (an AttributeError cleared) */
    PyObject *v = PyObject_GetAttr(o, st->I[name]);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

enum { OPT_PRICE, OPT_COID, OPT_INT };

static int
opt(gstate *st, PyObject *p, int name, int kind, PyObject **out)
{
    /* an optional param of the fast validators - protocol._opt_price (a price string seen
     * before: *out its fen), _opt_coid (a short str), or an int of amend_order - or null:
     * 1 given (*out its value, None for null), 0 absent (*out None), -1 not taken */
    PyObject *v = dget(st, p, name);
    *out = Py_None;
    if (v == NULL)
        return 0;
    if (v == Py_None)
        return 1;
    if (kind == OPT_PRICE) {
        v = PyUnicode_CheckExact(v) ? PyDict_GetItemWithError(st->prices, v) : NULL;
        if (v == NULL) {
            PyErr_Clear();
            return -1;
        }
    }
    else if (kind == OPT_COID ? !short_str(v) : !int64(v))
        return -1;
    *out = v;
    return 1;
}

static PyObject *
new_cmd(PyTypeObject *t, const Py_ssize_t *off, PyObject *const *vals, int n)
{
    /* object.__new__(t) with its n slots set from vals (the fast validators' construction) */
    PyObject *c = t->tp_alloc(t, 0);
    if (c == NULL)
        return NULL;
    for (int k = 0; k < n; k++)
        SL(c, off[k]) = Py_NewRef(vals[k]);
    return c;
}

/* ------------------------------------------------------------------ validation */

static PyObject *
place_cmd(gstate *st, PyObject *p, PyObject *firm)
{
    /* validate_place_order's fast path (and m_place's account): the PlaceOrder, or NULL
     * with no error when not taken */
    PyObject *ins = dget(st, p, I_INSTRUMENT), *side = dget(st, p, I_SIDE),
        *qty = dget(st, p, I_QTY);
    if (ins == NULL || side == NULL || qty == NULL || !short_str(ins) ||
        !int64(qty) || !(is_str(side, st->I[I_BUY]) || is_str(side, st->I[I_SELL])))
        return NULL;
    Py_ssize_t n = 3;
    PyObject *seg = dget(st, p, I_SEGMENT), *ot = dget(st, p, I_ORDER_TYPE),
        *tif = dget(st, p, I_TIF),
             *po = dget(st, p, I_POST_ONLY), *price, *coid;
    if (seg == NULL)
        seg = st->I[I_MAIN];
    else if (short_str(seg))
        n++;
    else
        return NULL;
    if (ot == NULL)
        ot = st->I[I_LIMIT];
    else if (is_str(ot, st->I[I_LIMIT]) || is_str(ot, st->I[I_MARKET]))
        n++;
    else
        return NULL;
    if (tif == NULL)
        tif = st->I[I_GTC];
    else if (is_str(tif, st->I[I_GTC]) || is_str(tif, st->I[I_DAY]) || is_str(tif, st->I[I_IOC]) ||
             is_str(tif, st->I[I_FOK]))
        n++;
    else
        return NULL;
    if (po == NULL)
        po = Py_False;
    else if (PyBool_Check(po))
        n++;
    else
        return NULL;
    int k1 = opt(st, p, I_PRICE, OPT_PRICE, &price), k2 = opt(st, p, I_COID, OPT_COID, &coid);
    if (k1 < 0 || k2 < 0 || PyDict_GET_SIZE(p) != n + k1 + k2)
        return NULL;
    PyObject *vals[PL_N] = {firm, ins, seg, side, qty, price, ot, tif, po, coid};
    PyObject *c = new_cmd(st->place_t, st->place_off, vals, PL_N);
    return c;
}

static PyObject *
cancel_cmd(gstate *st, PyObject *p, PyObject *firm)
{
    /* validate_cancel_order's fast path and _own_order_ref */
    if (PyDict_GET_SIZE(p) != 1)
        return NULL;
    PyObject *coid = dget(st, p, I_COID), *oid = Py_None;
    if (coid == NULL) {
        coid = Py_None;
        oid = dget(st, p, I_OID);
        if (oid == NULL || !int64(oid))
            return NULL;
    }
    else if (!short_str(coid))
        return NULL;
    PyObject *vals[CA_N] = {firm, oid, coid};
    PyObject *c = new_cmd(st->cancel_t, st->cancel_off, vals, CA_N);
    return c;
}

static PyObject *
amend_cmd(gstate *st, PyObject *p, PyObject *firm)
{
    /* validate_amend_order's fast path and _own_order_ref (an order must be named) */
    PyObject *oid, *coid, *qty, *price;
    int k1 = opt(st, p, I_OID, OPT_INT, &oid), k2 = opt(st, p, I_COID, OPT_COID, &coid),
        k3 = opt(st, p, I_QTY, OPT_INT, &qty), k4 = opt(st, p, I_PRICE, OPT_PRICE, &price);
    if (k1 < 0 || k2 < 0 || k3 < 0 || k4 < 0 || PyDict_GET_SIZE(p) != k1 + k2 + k3 + k4 ||
        (oid == Py_None && coid == Py_None))
        return NULL;
    PyObject *vals[AM_N] = {firm, oid, coid, qty, price};
    PyObject *c = new_cmd(st->amend_t, st->amend_off, vals, AM_N);
    return c;
}

/* ------------------------------------------------------------------ replies */

static char *
reply_open(jw_buf *out, Py_ssize_t more, long long req_id, long long oid, const item *coid)
{
    /* out: a buffer holding the replies' common head,
     * '{"req_id":R,"ok":true,"result":{"order_id":O,"client_order_id":C', with room for the
     * rest: every literal of either reply (under 140 bytes with the closing '}}' of
     * reply_close) and ``more``, the caller's bound on its numbers and strings. Returns where
     * to go on writing (NULL: no memory). */
    char *p = jw_open(out, 256 + 2 * 21 + coid->n + more);
    if (p == NULL)
        return NULL;
    JW_LIT("{\"req_id\":");
    JW_INT(req_id);
    JW_LIT(",\"ok\":true,\"result\":{\"order_id\":");
    JW_INT(oid);
    JW_LIT(",\"client_order_id\":");
    JW_ITEM(*coid);
    return p;
}

static PyObject *
reply_close(jw_buf *out, char *p)
{
    JW_LIT("}}");
    return jw_close(out, p);
}

static PyObject *
place_ok(gstate *st, PyObject *session, PyObject *cmd, long long req_id, PyObject *events,
         PyObject *seq_o)
{
    /* Gateway._place_reply's usual case: the reply bytes, or NULL with no error when it is
     * not the usual case or a value is not plain (nothing done: the caller calls the Python
     * function). */
    if (!PyList_CheckExact(events) || PyList_GET_SIZE(events) == 0)
        return NULL;
    PyObject *first = PyList_GET_ITEM(events, 0);
    if (Py_TYPE(first) != st->er_t || SL(first, st->er_off[R_ACCOUNT]) == NULL ||
        !is_str(SL(first, st->er_off[R_ACCOUNT]), SL(cmd, st->place_off[PL_ACCOUNT])) ||
        SL(first, st->er_off[R_EXEC_TYPE]) == NULL ||
        is_str(SL(first, st->er_off[R_EXEC_TYPE]), st->exec_rejected))
        return NULL;
    PyObject *oid_o = SL(first, st->er_off[R_OID]);
    long long oid, cum, leaves, seq;
    if (oid_o == NULL || !exact_int(oid_o, &oid))
        return NULL;
    PyObject *last = first;
    for (Py_ssize_t i = PyList_GET_SIZE(events) - 1; i > 0; i--) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        long long o;
        if (Py_TYPE(ev) != st->er_t)
            continue;
        if (SL(ev, st->er_off[R_OID]) == NULL || !exact_int(SL(ev, st->er_off[R_OID]), &o))
            return NULL;
        if (o == oid) {
            last = ev;
            break;
        }
    }
    item coid, status;
    PyObject *c = SL(first, st->er_off[R_COID]), *status_o = SL(last, st->er_off[R_STATUS]);
    PyObject *cum_o = SL(last, st->er_off[R_CUM]), *leaves_o = SL(last, st->er_off[R_LEAVES]);
    if (c == NULL || status_o == NULL || cum_o == NULL || leaves_o == NULL ||
        !(c == Py_None || PyUnicode_CheckExact(c)) || !classify(c, &coid) ||
        !str_like(status_o) || !classify(status_o, &status) || !exact_int(cum_o, &cum) ||
        !exact_int(leaves_o, &leaves) || seq_o == NULL || !exact_int(seq_o, &seq))
        return NULL;
    PyObject *cod = SL(session, st->sess_off[S_COD]), *placed = SL(session, st->sess_off[S_PLACED]);
    if (cod == NULL || placed == NULL || !PyBool_Check(cod) || !PySet_CheckExact(placed))
        return NULL;
    if (cod == Py_True && leaves && PySet_Add(placed, oid_o) < 0)
        return NULL; /* an error (no memory): the caller reports it */
    jw_buf out;
    char *p = reply_open(&out, 3 * 21 + status.n, req_id, oid, &coid);
    if (p == NULL)
        return NULL;
    JW_LIT(",\"order_status\":");
    JW_ITEM(status);
    JW_LIT(",\"cum_qty\":");
    JW_INT(cum);
    JW_LIT(",\"leaves_qty\":");
    JW_INT(leaves);
    JW_LIT(",\"seq\":");
    JW_INT(seq);
    return reply_close(&out, p);
}

static PyObject *
err_bytes(long long req_id, PyObject *code, PyObject *message)
{
    /* gateway._err_bytes(req_id, code, message) for plain strings (new bytes); NULL with no
     * error otherwise */
    item c, m;
    if (code == NULL || message == NULL || !str_like(code) || !str_like(message) ||
        !classify(code, &c) || !classify(message, &m))
        return NULL;
    static const char a[] = "{\"req_id\":", b[] = ",\"ok\":false,\"error\":{\"code\":",
                      d[] = ",\"message\":";
    jw_buf out;
    char *p = jw_open(&out, sizeof(a) + sizeof(b) + sizeof(d) + 21 + c.n + m.n + 2);
    if (p == NULL)
        return NULL;
    JW_LIT(a);
    JW_INT(req_id);
    JW_LIT(b);
    JW_ITEM(c);
    JW_LIT(d);
    JW_ITEM(m);
    JW_LIT("}}");
    return jw_close(&out, p);
}

static PyObject *
report_ok(gstate *st, long long req_id, PyObject *events, PyObject *account)
{
    /* gateway._report_reply's usual case (the order's last report), as place_ok */
    if (!PyList_CheckExact(events))
        return NULL;
    PyObject *last = NULL;
    long long last_oid = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        if (Py_TYPE(ev) == st->rejected_t) { /* the reject: its error */
            PyObject *code = PyObject_GetAttr(ev, st->I[I_CODE]);
            PyObject *msg = code ? PyObject_GetAttr(ev, st->I[I_MESSAGE]) : NULL;
            PyObject *data = err_bytes(req_id, code, msg);
            Py_XDECREF(code);
            Py_XDECREF(msg);
            if (PyErr_Occurred())
                PyErr_Clear();
            return data;
        }
        if (Py_TYPE(ev) != st->er_t)
            continue;
        PyObject *acct = SL(ev, st->er_off[R_ACCOUNT]), *oid_o = SL(ev, st->er_off[R_OID]);
        long long oid;
        if (acct == NULL || oid_o == NULL || !exact_int(oid_o, &oid))
            return NULL;
        if (is_str(acct, account) && (last == NULL || oid == last_oid)) {
            last = ev;
            last_oid = oid;
        }
        else if (!PyUnicode_CheckExact(acct))
            return NULL; /* a comparison Python might make otherwise */
    }
    if (last == NULL)
        return NULL;
    item coid, et, stat;
    long long qty, cum, leaves, px = 0;
    PyObject *c = SL(last, st->er_off[R_COID]), *e_o = SL(last, st->er_off[R_EXEC_TYPE]),
             *s_o = SL(last, st->er_off[R_STATUS]), *q = SL(last, st->er_off[R_QTY]),
             *p_o = SL(last, st->er_off[R_PRICE]), *cu = SL(last, st->er_off[R_CUM]),
             *l = SL(last, st->er_off[R_LEAVES]);
    if (c == NULL || e_o == NULL || s_o == NULL || q == NULL || p_o == NULL || cu == NULL ||
        l == NULL || !(c == Py_None || PyUnicode_CheckExact(c)) || !classify(c, &coid) ||
        !str_like(e_o) || !classify(e_o, &et) || !str_like(s_o) ||
        !classify(s_o, &stat) || !exact_int(q, &qty) || !exact_int(cu, &cum) ||
        !exact_int(l, &leaves) || (p_o != Py_None && !exact_int(p_o, &px)))
        return NULL;
    jw_buf out;
    char *p = reply_open(&out, 3 * 21 + PX_MAX + et.n + stat.n, req_id, last_oid, &coid);
    if (p == NULL)
        return NULL;
    JW_LIT(",\"exec_type\":");
    JW_ITEM(et);
    JW_LIT(",\"order_status\":");
    JW_ITEM(stat);
    JW_LIT(",\"qty\":");
    JW_INT(qty);
    JW_LIT(",\"price\":");
    if (p_o == Py_None)
        JW_LIT("null");
    else
        p = write_px(p, px);
    JW_LIT(",\"cum_qty\":");
    JW_INT(cum);
    JW_LIT(",\"leaves_qty\":");
    JW_INT(leaves);
    return reply_close(&out, p);
}

/* ------------------------------------------------------------------ gate */

enum { ADMIT_OK, ADMIT_IN_FLIGHT, ADMIT_JOURNAL_LAG, ADMIT_SEND_QUEUE };
static const char *const admit_why[] = {NULL, "in_flight", "journal_lag", "send_queue"};

static int
admission(gstate *st, PyObject *gw, PyObject *runner, PyObject *session, long long *lag_out)
{
    /* what Gateway.admit decides: ADMIT_OK, or the bound that refuses (ADMIT_IN_FLIGHT,
     * ADMIT_JOURNAL_LAG, ADMIT_SEND_QUEUE, as in admit's order); -1 (no error) when it
     * cannot tell. *lag_out: runner.journal_lag, as read (for the refusal's message). */
    PyObject *lag = attr(st, runner, I_JOURNAL_LAG), *mx = attr(st, gw, I_MAX_IN_FLIGHT),
             *oq = attr(st, gw, I_OVERLOAD_QUEUE), *out = SL(session, st->sess_off[S_OUT]);
    long long l = 0, m, q;
    int r = -1;
    if (lag && mx && oq && out && PyList_CheckExact(out) && exact_int(lag, &l) &&
        exact_int(mx, &m) && exact_int(oq, &q)) {
        r = l && l >= m ? ADMIT_IN_FLIGHT : ADMIT_OK;
        if (r == ADMIT_OK && l) { /* commands in flight: how long the oldest has waited */
            PyObject *age = attr(st, runner, I_JOURNAL_LAG_SECONDS),
                *mx_s = attr(st, gw, I_MAX_LAG_S);
            if (age && mx_s && PyFloat_CheckExact(age) && PyFloat_CheckExact(mx_s))
                r = PyFloat_AS_DOUBLE(age) >= PyFloat_AS_DOUBLE(mx_s) ? ADMIT_JOURNAL_LAG
                                                                       : ADMIT_OK;
            else
                r = -1;
            Py_XDECREF(age);
            Py_XDECREF(mx_s);
        }
        if (r == ADMIT_OK && PyList_GET_SIZE(out) >= q)
            r = ADMIT_SEND_QUEUE;
        *lag_out = l;
    }
    if (PyErr_Occurred())
        PyErr_Clear();
    Py_XDECREF(lag);
    Py_XDECREF(mx);
    Py_XDECREF(oq);
    return r;
}

/* Out of the cyclic GC's reach: a tuple whose items the GC does not track (strings, ints,
 * bytes, None, such tuples) can be in no reference cycle. The collector would untrack it
 * itself, but only after examining it in a young collection; the idempotency window keeps
 * 20,000 of them per second at full load, which made each young collection walk them all. */
static PyObject *
untracked(PyObject *t)
{
    if (t != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++)
            if (PyObject_GC_IsTracked(PyTuple_GET_ITEM(t, i)))
                return t;
        PyObject_GC_UnTrack(t);
    }
    return t;
}

static int
seen_coid(gstate *st, PyObject *gw, PyObject *firm, PyObject *coid, PyObject *key)
{
    /* Gateway.place's idempotency lookups of key, (firm, coid): 1 when it was seen (done, in
     * flight, or coid is a live order of the firm), or when it cannot tell; 0 when new */
    PyObject *idem = attr(st, gw, I_IDEM), *ex = attr(st, gw, I_EX);
    PyObject *done = idem ? attr(st, idem, I_DONE) : NULL, *inflight = idem ?
        attr(st, idem, I_INFLIGHT)
                                                                      : NULL;
    PyObject *accounts = ex ? attr(st, ex, I_ACCOUNTS) : NULL;
    int seen = 1;
    if (done && inflight && accounts && PyDict_CheckExact(done) &&
        PyDict_CheckExact(inflight) && PyDict_CheckExact(accounts) &&
        PyDict_GetItemWithError(done, key) == NULL && !PyErr_Occurred() &&
        PyDict_GetItemWithError(inflight, key) == NULL && !PyErr_Occurred()) {
        PyObject *acct = PyDict_GetItemWithError(accounts, firm);
        PyObject *coids = acct ? attr(st, acct, I_COIDS) : NULL;
        if (acct == NULL && !PyErr_Occurred())
            seen = 0;
        else if (coids && PyDict_CheckExact(coids))
            seen = PyDict_GetItemWithError(coids, coid) != NULL || PyErr_Occurred();
        Py_XDECREF(coids);
    }
    if (PyErr_Occurred())
        PyErr_Clear();
    Py_XDECREF(idem);
    Py_XDECREF(ex);
    Py_XDECREF(done);
    Py_XDECREF(inflight);
    Py_XDECREF(accounts);
    return seen;
}

static int
incr_attr(gstate *st, PyObject *o, PyObject *name)
{
    /* o.<name> += 1 */
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    PyObject *w = PyNumber_Add(v, st->one_);
    Py_DECREF(v);
    if (w == NULL)
        return -1;
    int r = PyObject_SetAttr(o, name, w);
    Py_DECREF(w);
    return r;
}

static inline int
bump(gstate *st, PyObject *o, int name)
{
    return incr_attr(st, o, st->I[name]);
}

static int
enqueue(gstate *st, PyObject *gw, PyObject *durable, PyObject *session, PyObject *req_id,
        PyObject *data,
        PyObject *key, PyObject *outcome)
{
    /* Gateway._enqueue: appended to the open batch when durable is its future; otherwise
     * (once a batch) the Python method opens the batch */
    PyObject *bf = attr(st, gw, I_BATCH_FUTURE), *batch = NULL;
    int r;
    if (bf == durable && (batch = attr(st, gw, I_BATCH)) != NULL && PyList_CheckExact(batch)) {
        PyObject *t = PyTuple_Pack(5, session, req_id, data, key, outcome);
        r = t == NULL ? -1 : PyList_Append(batch, t);
        Py_XDECREF(t);
    }
    else {
        PyObject *res = PyObject_CallMethodObjArgs(gw, st->I[I_ENQUEUE], durable, session, req_id,
                                                   data, key, outcome, NULL);
        r = res == NULL ? -1 : 0;
        Py_XDECREF(res);
    }
    Py_XDECREF(bf);
    Py_XDECREF(batch);
    return r;
}

static int answer_error(gstate *st, PyObject *pe, PyObject *session, PyObject *req_id);

static int
refused(gstate *st, PyObject *gw, PyObject *session, PyObject *req_id)
{
    /* the runner raised out of submit_nowait: Gateway.submit_failed(exc) gives the
     * ProtocolError, answered as on_request answers one. An exception that is not an
     * Exception (KeyboardInterrupt) propagates, as in Python. */
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyObject *pe = PyObject_CallMethodOneArg(gw, st->I[I_SUBMIT_FAILED], value);
    Py_XDECREF(value);
    return answer_error(st, pe, session, req_id);
}

static int
answer_error(gstate *st, PyObject *pe, PyObject *session, PyObject *req_id)
{
    /* on_request's answer to a ProtocolError pe (a new reference, or NULL with an error):
     * session.error(req_id, pe.code, pe.message) */
    if (pe == NULL)
        return -1;
    PyObject *code = PyObject_GetAttr(pe, st->I[I_CODE]),
        *msg = PyObject_GetAttr(pe, st->I[I_MESSAGE]);
    Py_DECREF(pe);
    PyObject *res = code && msg ? PyObject_CallMethodObjArgs(session, st->I[I_ERROR], req_id, code,
                                                             msg, NULL)
                                : NULL;
    Py_XDECREF(code);
    Py_XDECREF(msg);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

static int sess_send(gstate *st, PyObject *s, PyObject *data);

static int
dict_count(gstate *st, PyObject *o, int name, PyObject *k)
{
    /* o.<name>[k] = o.<name>.get(k, 0) + 1 */
    PyObject *d = PyObject_GetAttr(o, st->I[name]), *n = NULL;
    int r = -1;
    if (d != NULL && PyDict_Check(d)) {
        PyObject *v = PyDict_GetItemWithError(d, k);
        if (v == NULL && !PyErr_Occurred())
            v = st->zero;
        if (v != NULL && (n = PyNumber_Add(v, st->one_)) != NULL)
            r = PyDict_SetItem(d, k, n);
    }
    else if (d != NULL)
        PyErr_SetString(PyExc_TypeError, "gate: a counter that is not a dict");
    Py_XDECREF(n);
    Py_XDECREF(d);
    return r;
}

static int
dict_count_s(gstate *st, PyObject *o, int name, const char *key)
{
    PyObject *k = PyUnicode_InternFromString(key);
    int r = k == NULL ? -1 : dict_count(st, o, name, k);
    Py_XDECREF(k);
    return r;
}

static int
overloaded(gstate *st, PyObject *gw, PyObject *metrics, long long lag, PyObject *s, int why,
           long long req_id, PyObject *rid)
{
    /* Gateway.overloaded(s, why) answered as on_request answers its ProtocolError
     * (Session.error): counted, and the error queued for s; lag: runner.journal_lag */
    PyObject *out = SL(s, st->sess_off[S_OUT]);
    if (out == NULL || !PyList_CheckExact(out)) { /* the reference */
        PyObject *w = PyUnicode_FromString(admit_why[why]);
        PyObject *pe = w ? PyObject_CallMethodObjArgs(gw, st->I[I_OVERLOADED], s, w, NULL) : NULL;
        Py_XDECREF(w);
        return answer_error(st, pe, s, rid);
    }
    char msg[200];
    snprintf(msg, sizeof msg, "server busy (%lld commands not yet durable, %zd messages "
             "queued for this connection); not applied, retry later", lag,
             PyList_GET_SIZE(out));
    PyObject *code = PyUnicode_InternFromString("OVERLOADED"), *m = PyUnicode_FromString(msg);
    PyObject *data = code && m ? err_bytes(req_id, code, m) : NULL;
    Py_XDECREF(code);
    Py_XDECREF(m);
    int r = data != NULL && bump(st, metrics, I_OVERLOADED) == 0 &&
                    dict_count_s(st, metrics, I_OVERLOADED_BY, admit_why[why]) == 0 &&
                    dict_count_s(st, metrics, I_GATEWAY_ERRORS, "OVERLOADED") == 0 &&
                    sess_send(st, s, data) == 0
                ? 0
                : -1;
    if (r < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "gate: could not write an OVERLOADED reply");
    Py_XDECREF(data);
    return r;
}

static PyObject *
gate(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gstate *st = state_of(self);
    if (nargs != 2)
        Py_RETURN_FALSE;
    PyObject *s = args[0], *obj = args[1];
    if (!st->ready || Py_TYPE(s) != st->sess_t || !PyDict_CheckExact(obj) ||
        PyDict_GET_SIZE(obj) != 3)
        Py_RETURN_FALSE;
    /* the envelope: exactly req_id (a 64-bit int), method and params (a dict) */
    PyObject *rid = dget(st, obj, I_REQ_ID), *method = dget(st, obj, I_METHOD),
             *params = dget(st, obj, I_PARAMS);
    long long req_id;
    if (rid == NULL || method == NULL || params == NULL || !exact_int(rid, &req_id) ||
        !PyDict_CheckExact(params))
        Py_RETURN_FALSE;
    int which = is_str(method, st->I[I_PLACE]) ? I_PLACE : is_str(method, st->I[I_CANCEL]) ?
        I_CANCEL
                : is_str(method, st->I[I_AMEND]) ? I_AMEND : -1;
    if (which < 0)
        Py_RETURN_FALSE;
    /* the session: authenticated as a firm, not closed, a token left */
    PyObject *firm = SL(s, st->sess_off[S_FIRM]), *cred = SL(s, st->sess_off[S_CRED]),
             *role = SL(s, st->sess_off[S_ROLE]), *tokens = SL(s, st->sess_off[S_TOKENS]),
             *gw = SL(s, st->sess_off[S_GW]);
    if (firm == NULL || !PyUnicode_CheckExact(firm) || cred == NULL || cred == Py_None ||
        role == NULL || !is_str(role, st->role_firm) || SL(s, st->sess_off[S_CLOSED]) != Py_False ||
        tokens == NULL || !PyFloat_CheckExact(tokens) || PyFloat_AS_DOUBLE(tokens) < 1.0 ||
        gw == NULL)
        Py_RETURN_FALSE;
    PyObject *cmd = which == I_PLACE    ? place_cmd(st, params, firm)
                    : which == I_CANCEL ? cancel_cmd(st, params, firm)
                                        : amend_cmd(st, params, firm);
    if (cmd == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;
    }
    PyObject *runner = NULL, *accepting = NULL, *metrics = NULL, *key = NULL;
    PyObject *coid = which == I_PLACE ? SL(cmd, st->place_off[PL_COID]) : Py_None;
    int adm = ADMIT_OK; /* cancels are never refused for load */
    long long lag = 0;
    int take = (runner = attr(st, gw, I_RUNNER)) != NULL &&
               (accepting = attr(st, gw, I_ACCEPTING)) == Py_True &&
               (metrics = attr(st, gw, I_METRICS)) != NULL &&
               (which == I_CANCEL || (adm = admission(st, gw, runner, s, &lag)) >= 0) &&
               (coid == Py_None ||
                ((key = untracked(PyTuple_Pack(2, firm, coid))) != NULL &&
                 !seen_coid(st, gw, firm, coid, key)));
    /* the token read again: the checks above ran properties (journal_lag) */
    tokens = SL(s, st->sess_off[S_TOKENS]);
    take = take && tokens != NULL && PyFloat_CheckExact(tokens) &&
           PyFloat_AS_DOUBLE(tokens) >= 1.0;
    Py_XDECREF(accepting);
    if (!take) {
        Py_DECREF(cmd);
        Py_XDECREF(runner);
        Py_XDECREF(metrics);
        Py_XDECREF(key);
        if (PyErr_Occurred())
            PyErr_Clear();
        Py_RETURN_FALSE;
    }

    /* ---- taken: from here on the request is this function's. The session's firm and
     * gateway are held: submitting runs the core's listeners (Python). */
    PyObject *res = NULL, *data = NULL, *ret = NULL, *t = NULL;
    Py_INCREF(firm);
    Py_INCREF(gw);
    PyObject *ntokens = PyFloat_FromDouble(PyFloat_AS_DOUBLE(tokens) - 1.0);
    if (ntokens == NULL || bump(st, metrics, I_MESSAGES_IN) < 0)
        goto done;
    Py_SETREF(SL(s, st->sess_off[S_TOKENS]), ntokens);
    ntokens = NULL;
    Py_XSETREF(SL(s, st->sess_off[S_REQ_ID]), Py_NewRef(rid));
    if (adm != ADMIT_OK) { /* refused by admission control: answered here, as admit's error */
        if (overloaded(st, gw, metrics, lag, s, adm, req_id, rid) == 0)
            ret = Py_NewRef(Py_True);
        goto done;
    }
    res = PyObject_CallMethodOneArg(runner, st->I[I_SUBMIT_NOWAIT], cmd);
    if (res == NULL) {
        if (refused(st, gw, s, rid) == 0)
            ret = Py_NewRef(Py_True);
        goto done;
    }
    if (!PyTuple_CheckExact(res) || PyTuple_GET_SIZE(res) != 2) {
        PyErr_SetString(PyExc_TypeError, "gate: submit_nowait did not return (events, future)");
        goto done;
    }
    PyObject *events = PyTuple_GET_ITEM(res, 0), *durable = PyTuple_GET_ITEM(res, 1);
    if (which == I_PLACE) {
        /* the order's seq: the exchange's last, right after the runner applied it */
        PyObject *ex = attr(st, gw, I_EX), *seq = ex ? attr(st, ex, I_LAST_SEQ) : NULL;
        data = place_ok(st, s, cmd, req_id, events, seq);
        Py_XDECREF(ex);
        Py_XDECREF(seq);
        if (data == NULL && PyErr_Occurred())
            goto done;
        PyObject *outcome;
        if (data == NULL) { /* the reference builds it: (data, outcome) */
            t = PyObject_CallMethodObjArgs(gw, st->I[I_PLACE_REPLY], s, cmd, rid, events, NULL);
            if (t == NULL)
                goto done;
            if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 2) {
                PyErr_SetString(PyExc_TypeError, "gate: _place_reply did not return a pair");
                goto done;
            }
            data = Py_NewRef(PyTuple_GET_ITEM(t, 0));
            outcome = PyTuple_GET_ITEM(t, 1);
        }
        else
            outcome = data;
        PyObject *entry = NULL; /* what is remembered: Gateway.place's [outcome, cmd, None] */
        if (key != NULL) {
            /* the command is kept so that a retry naming other terms is refused, and the
             * last slot takes the order's final state (Gateway._idem_listen) */
            entry = PyList_New(3);
            if (entry == NULL)
                goto done;
            PyList_SET_ITEM(entry, 0, Py_NewRef(outcome));
            PyList_SET_ITEM(entry, 1, Py_NewRef(cmd));
            PyList_SET_ITEM(entry, 2, Py_NewRef(Py_None));
            PyObject *idem = attr(st, gw, I_IDEM), *inflight = idem ? attr(st, idem, I_INFLIGHT) :
                NULL;
            PyObject *v = inflight ? PyTuple_Pack(2, entry, durable) : NULL;
            int e = v == NULL || PyObject_SetItem(inflight, key, v) < 0;
            Py_XDECREF(idem);
            Py_XDECREF(inflight);
            Py_XDECREF(v);
            if (e) {
                Py_DECREF(entry);
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_AttributeError, "gate: Gateway.idem.inflight");
                goto done;
            }
        }
        int e = enqueue(st, gw, durable, s, rid, data, key ? key : Py_None,
                        entry ? entry : Py_None);
        Py_XDECREF(entry);
        if (e < 0)
            goto done;
    }
    else {
        data = report_ok(st, req_id, events, firm);
        if (data == NULL) {
            PyObject *kind = PyObject_GetAttr(cmd, st->I[I_TYPE]);
            data = kind ? PyObject_CallFunctionObjArgs(st->report_reply, rid, events, firm, kind,
                                                       NULL)
                        : NULL;
            Py_XDECREF(kind);
            if (data == NULL)
                goto done;
        }
        if (enqueue(st, gw, durable, s, rid, data, Py_None, Py_None) < 0)
            goto done;
    }
    ret = Py_NewRef(Py_True);
done:
    Py_XDECREF(ntokens);
    Py_XDECREF(res);
    Py_XDECREF(data);
    Py_XDECREF(t);
    Py_DECREF(cmd);
    Py_DECREF(runner);
    Py_DECREF(metrics);
    Py_XDECREF(key);
    Py_DECREF(firm);
    Py_DECREF(gw);
    return ret;
}

/* ------------------------------------------------------------------------- er_push */


static int
push_offsets(gstate *st, PyTypeObject *cls)
{
    /* push_off for cls (cached for the last class seen); 0: not slots (not taken) */
    if (cls == st->push_cls)
        return 1;
    int r = slot_offsets(cls, push_names, ER_N, st->push_off);
    if (r <= 0) {
        Py_CLEAR(st->push_cls);
        return r;
    }
    Py_INCREF(cls);
    Py_XSETREF(st->push_cls, cls); /* held, so its address cannot be reused by another class */
    return 1;
}

static int
str_or_null(PyObject *v, item *it)
{
    /* JSON_STR's bytes: null, or a plain string (classify's rule); 0 when not plain */
    return (v == Py_None || str_like(v)) && classify(v, it);
}


/* er_push(seq, head, ev) -> bytes | None
 *     ER_PUSH % ((seq,) + er_tail_args(ev, head)) of exchange.server.protocol - the
 *     executions push of one report, head being er_head(ev) - or None when a value is not
 *     a plain one (then the caller formats it in Python, the reference). */
static PyObject *
er_push_impl(gstate *st, PyObject *seq_o, PyObject *head, PyObject *ev)
{
    long long seq;
    if (!exact_int(seq_o, &seq) || !PyBytes_CheckExact(head)) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    int r = push_offsets(st, Py_TYPE(ev));
    if (r < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    PyObject *v[ER_N];
    for (int k = 0; k < ER_N; k++) {
        v[k] = *(PyObject **)((char *)ev + st->push_off[k]);
        if (v[k] == NULL)
            Py_RETURN_NONE;
    }
    item exec_type, status, reason, liquidity;
    long long price = 0, qty, last_qty, last_px = 0, cum, leaves, tid, fee, ts;
    int has_price = v[ER_PRICE] != Py_None;
    if (!str_or_null(v[ER_EXEC_TYPE], &exec_type) || !str_or_null(v[ER_ORDER_STATUS], &status) ||
        !str_or_null(v[ER_REASON], &reason) || !str_or_null(v[ER_LIQUIDITY], &liquidity) ||
        (has_price && !exact_int(v[ER_PRICE], &price)) || !exact_int(v[ER_QTY], &qty) ||
        !exact_int(v[ER_LAST_QTY], &last_qty) || !exact_int(v[ER_CUM_QTY], &cum) ||
        !exact_int(v[ER_LEAVES_QTY], &leaves) || !exact_int(v[ER_TRADE_ID], &tid) ||
        !exact_int(v[ER_FEE], &fee) || !exact_int(v[ER_TS], &ts) ||
        (last_qty && !exact_int(v[ER_LAST_PX], &last_px))) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    static const char pre[] = "{\"channel\":\"executions\",\"seq\":";
    /* an upper bound: the fixed text (~200 bytes), the strings, 9 numbers, 3 prices */
    Py_ssize_t cap = 256 + PyBytes_GET_SIZE(head) + exec_type.n + status.n + reason.n +
                     liquidity.n + 9 * 21 + 3 * PX_MAX;
    jw_buf out;
    char *p = jw_open(&out, cap);
    if (p == NULL)
        return NULL;
    JW_LIT(pre);
    JW_INT(seq);
    JW_LIT(",\"data\":");
    memcpy(p, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head));
    p += PyBytes_GET_SIZE(head);
    JW_LIT("\"exec_type\":");
    JW_ITEM(exec_type);
    JW_LIT(",\"order_status\":");
    JW_ITEM(status);
    JW_LIT(",\"price\":");
    if (has_price)
        p = write_px(p, price);
    else
        JW_LIT("null");
    JW_LIT(",\"qty\":");
    JW_INT(qty);
    JW_LIT(",\"last_qty\":");
    JW_INT(last_qty);
    JW_LIT(",\"last_px\":");
    if (last_qty)
        p = write_px(p, last_px);
    else
        JW_LIT("null");
    JW_LIT(",\"cum_qty\":");
    JW_INT(cum);
    JW_LIT(",\"leaves_qty\":");
    JW_INT(leaves);
    JW_LIT(",\"reason\":");
    JW_ITEM(reason);
    JW_LIT(",\"trade_id\":");
    if (tid)
        JW_INT(tid);
    else
        JW_LIT("null");
    JW_LIT(",\"fee\":");
    if (fee)
        p = write_px(p, fee);
    else
        JW_LIT("\"0.00\"");
    JW_LIT(",\"liquidity\":");
    JW_ITEM(liquidity);
    JW_LIT(",\"ts\":");
    JW_INT(ts);
    JW_LIT("}}");
    return jw_close(&out, p);
}


static PyObject *
er_push(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gstate *st = state_of(self);
    if (nargs != 3)
        Py_RETURN_NONE;
    return er_push_impl(st, args[0], args[1], args[2]);
}

/* ------------------------------------------------------------------ the executions fan-out */

/* fanout(gateway, cmd, seq, ts, events)
 *     Gateway.on_commit(cmd, seq, ts, events) - the runner's listener, after durability - for
 *     the usual events: an execution report of an account with at most one executions
 *     subscriber (its push written by er_push), a book update or a trade nobody subscribed
 *     to. Any other event goes to the Python method for it (Gateway._on_report /
 *     _on_event), in its turn, so the order of the pushes is the reference's.
 *
 * fanout_setup(cfg: dict) names what it needs beyond gate_setup's (gateway.py, at import).
 *
 * Why: after the order requests moved to C (gate), this per-command loop was the gateway's
 * largest piece of Python at saturation (ADR 0003, "The fan-out in C"). */


static PyObject *
fanout_setup(PyObject *self, PyObject *cfg)
{
    gstate *st = state_of(self);
    static const char *const keys[] = {"BookUpdate", "Trade", "er_head", "er_push",
                                       "ER_HEADS_MAX"};
    PyObject *v[5];
    if (!st->ready) {
        PyErr_SetString(PyExc_RuntimeError, "fanout_setup: gate_setup first");
        return NULL;
    }
    if (!PyDict_Check(cfg)) {
        PyErr_SetString(PyExc_TypeError, "fanout_setup(dict)");
        return NULL;
    }
    for (int k = 0; k < 5; k++) {
        v[k] = PyDict_GetItemString(cfg, keys[k]);
        if (v[k] == NULL || (k < 2 && !PyType_Check(v[k])) || (k >= 2 && k < 4 &&
                                                               !PyCallable_Check(v[k]))) {
            PyErr_Format(PyExc_KeyError, "fanout_setup: %s", keys[k]);
            return NULL;
        }
    }
    Py_ssize_t hm = PyLong_AsSsize_t(v[4]);
    if (hm == -1 && PyErr_Occurred())
        return NULL;
    Py_XSETREF(st->bu_t, (PyTypeObject *)Py_NewRef(v[0]));
    Py_XSETREF(st->trade_t, (PyTypeObject *)Py_NewRef(v[1]));
    Py_XSETREF(st->er_head_fn, Py_NewRef(v[2]));
    Py_XSETREF(st->er_push_fn, Py_NewRef(v[3]));
    st->heads_max = hm;
    st->fan_ready = 1;
    Py_RETURN_NONE;
}

static inline int
fbump(gstate *st, PyObject *o, int name)
{
    return incr_attr(st, o, st->F[name]);
}

static int
fcall(gstate *st, PyObject *o, int name, PyObject *a)
{
    /* o.<name>(a) (or o.<name>() when a is NULL), the result dropped */
    PyObject *r = a ? PyObject_CallMethodOneArg(o, st->F[name], a)
                    : PyObject_CallMethodNoArgs(o, st->F[name]);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int
sess_send(gstate *st, PyObject *s, PyObject *data)
{
    /* Session.send(data): queued; Session._queued (the slow-consumer bound, a flush) only
     * when it has something to do. s is a Session. */
    PyObject *closed = SL(s, st->sess_off[S_CLOSED]), *out = SL(s, st->sess_off[S_OUT]);
    if (closed == NULL || out == NULL || !PyBool_Check(closed) || !PyList_CheckExact(out))
        return fcall(st, s, F_SEND, data);
    if (closed == Py_True)
        return 0;
    if (PyList_Append(out, data) < 0)
        return -1;
    PyObject *flushing = SL(s, st->sess_off[S_FLUSHING]), *qmax = SL(s, st->sess_off[S_QMAX]);
    long long qm;
    if (flushing == Py_True && qmax != NULL && PyLong_CheckExact(qmax) &&
        (qm = PyLong_AsLongLong(qmax)) != -1 && PyList_GET_SIZE(out) <= qm)
        return 0;
    if (PyErr_Occurred())
        PyErr_Clear();
    return fcall(st, s, F_QUEUED, NULL);
}

static PyObject *
report_head(gstate *st, PyObject *ev, PyObject *heads, PyObject *oid, int leaves)
{
    /* _on_report's head: kept in heads while the order works, dropped with its last
     * report; a new reference */
    PyObject *head = PyDict_GetItemWithError(heads, oid);
    if (head == NULL && PyErr_Occurred())
        return NULL;
    if (leaves) {
        if (head != NULL)
            return Py_NewRef(head);
        if (PyDict_GET_SIZE(heads) >= st->heads_max)
            PyDict_Clear(heads);
        head = PyObject_CallOneArg(st->er_head_fn, ev);
        if (head != NULL && PyDict_SetItem(heads, oid, head) < 0)
            Py_CLEAR(head);
        return head;
    }
    if (head != NULL) { /* heads.pop(oid, None) or er_head(ev) */
        Py_INCREF(head);
        if (PyDict_DelItem(heads, oid) < 0) {
            Py_DECREF(head);
            return NULL;
        }
        int t = PyObject_IsTrue(head);
        if (t != 0) {
            if (t < 0)
                Py_CLEAR(head);
            return head;
        }
        Py_DECREF(head);
    }
    return PyObject_CallOneArg(st->er_head_fn, ev);
}

static PyObject *
only_member(PyObject *set)
{
    /* the member of a one-member set, borrowed (the set holds it) */
    /* through the public iterator protocol: the set holds one member */
    PyObject *it = PyObject_GetIter(set), *m = it ? PyIter_Next(it) : NULL;
    Py_XDECREF(it);
    Py_XDECREF(m); /* still held by the set */
    if (PyErr_Occurred())
        PyErr_Clear();
    return m;
}

static int
fan_report(gstate *st, PyObject *ev, PyObject *exec_subs, PyObject *bal_subs, PyObject *dirty_bal,
           PyObject *heads)
{
    /* Gateway._on_report(ev) for a report that is not a reject, of an account with at most
     * one executions subscriber: 1 done, 0 not taken (nothing changed), -1 an error */
    PyObject *acct = SL(ev, st->er_off[R_ACCOUNT]), *et = SL(ev, st->er_off[R_EXEC_TYPE]),
             *oid = SL(ev, st->er_off[R_OID]), *lv = SL(ev, st->er_off[R_LEAVES]);
    if (acct == NULL || et == NULL || oid == NULL || lv == NULL ||
        !PyUnicode_CheckExact(acct) || !str_like(et) || is_str(et, st->exec_rejected) ||
        !PyLong_CheckExact(lv))
        return 0;
    PyObject *subs = PyDict_GetItemWithError(exec_subs, acct), *s = NULL;
    if (subs == NULL && PyErr_Occurred())
        return -1;
    if (subs != NULL) {
        if (!PyAnySet_CheckExact(subs) || PySet_GET_SIZE(subs) > 1)
            return 0;
        if (PySet_GET_SIZE(subs) == 1) {
            if ((s = only_member(subs)) == NULL || Py_TYPE(s) != st->sess_t)
                return 0;
            PyObject *ss = SL(s, st->sess_off[S_SUBS]);
            if (ss == NULL || !PyDict_CheckExact(ss))
                return 0;
        }
    }
    /* taken: from here on as _on_report */
    int bal = PyDict_Contains(bal_subs, acct);
    if (bal < 0 || (bal && PySet_Add(dirty_bal, acct) < 0))
        return -1;
    if (s == NULL)
        return 1;
    Py_INCREF(s); /* a send may close the session */
    int r = -1;
    PyObject *head = report_head(st, ev, heads, oid, lv != Py_False && PyObject_IsTrue(lv) == 1);
    PyObject *nseq = NULL, *data = NULL;
    if (head == NULL)
        goto done;
    PyObject *ss = SL(s, st->sess_off[S_SUBS]);
    PyObject *seq = ss ? PyDict_GetItemWithError(ss, st->F[F_EXECUTIONS]) : NULL;
    if (seq == NULL) {
        r = PyErr_Occurred() ? -1 : 1;
        goto done;
    }
    if ((nseq = PyNumber_Add(seq, st->one_)) == NULL ||
        PyDict_SetItem(ss, st->F[F_EXECUTIONS], nseq) < 0 ||
        (data = er_push_impl(st, nseq, head, ev)) == NULL)
        goto done;
    if (data == Py_None) { /* not plain: the reference formats it */
        Py_DECREF(data);
        if ((data = PyObject_CallFunctionObjArgs(st->er_push_fn, nseq, head, ev, NULL)) == NULL)
            goto done;
    }
    r = sess_send(st, s, data) < 0 ? -1 : 1;
done:
    Py_XDECREF(data);
    Py_XDECREF(nseq);
    Py_XDECREF(head);
    Py_DECREF(s);
    return r;
}

static PyObject *
fanout(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gstate *st = state_of(self);
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "fanout(gateway, cmd, seq, ts, events)");
        return NULL;
    }
    PyObject *gw = args[0], *cmd = args[1], *events = args[4];
    if (!st->fan_ready || !PyList_CheckExact(events))
        return PyObject_CallMethodObjArgs(gw, st->F[F_ON_COMMIT], cmd, args[2], args[3], events,
                                          NULL);
    PyObject *a[F_METRICS + 1] = {NULL};
    PyObject *ret = NULL;
    for (int k = 0; k <= F_METRICS; k++)
        if ((a[k] = PyObject_GetAttr(gw, st->F[k])) == NULL)
            goto done;
    if (!PyDict_CheckExact(a[F_EXEC_SUBS]) || !PyDict_CheckExact(a[F_BAL_SUBS]) ||
        !PyAnySet_CheckExact(a[F_DIRTY_BAL]) || !PyDict_CheckExact(a[F_ER_HEADS]) ||
        !PyAnySet_CheckExact(a[F_DIRTY_TICK])) {
        ret = PyObject_CallMethodObjArgs(gw, st->F[F_ON_COMMIT], cmd, args[2], args[3], events,
                                         NULL);
        goto done;
    }
    if (fbump(st, a[F_METRICS], F_COMMANDS) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        PyObject *ev = Py_NewRef(PyList_GET_ITEM(events, i));
        PyTypeObject *t = Py_TYPE(ev);
        int r = 0;
        if (t == st->er_t) {
            r = fan_report(st, ev, a[F_EXEC_SUBS], a[F_BAL_SUBS], a[F_DIRTY_BAL], a[F_ER_HEADS]);
            if (r == 0)
                r = fcall(st, gw, F_ON_REPORT, ev);
        }
        else if (t == st->bu_t && !PyObject_IsTrue(a[F_BOOK_SUBS]) &&
                 !PyObject_IsTrue(a[F_TICKER_SUBS])) {
            r = PyErr_Occurred() ? -1 : 0; /* nobody to tell */
        }
        else if (t == st->trade_t && !PyObject_IsTrue(a[F_TRADE_SUBS]) &&
                 !PyObject_IsTrue(a[F_TICKER_SUBS]) && !PyErr_Occurred()) {
            PyObject *split = PyObject_GetAttr(ev, st->F[F_PROCEEDS_SPLIT]);
            int plain = split != NULL && PyTuple_CheckExact(split) &&
                        (PyTuple_GET_SIZE(split) == 0 || PyDict_GET_SIZE(a[F_BAL_SUBS]) == 0);
            Py_XDECREF(split);
            r = split == NULL ? -1
                : plain       ? fbump(st, a[F_METRICS], F_TRADES)
                              : fcall(st, gw, F_ON_EVENT, ev);
        }
        else if (t == st->rejected_t && !PyErr_Occurred()) { /* a refused command: counted */
            PyObject *code = PyObject_GetAttr(ev, st->I[I_CODE]);
            r = code == NULL ? -1
                : str_like(code) ? dict_count(st, a[F_METRICS], I_REJECTS, code)
                                             : fcall(st, gw, F_ON_EVENT, ev);
            Py_XDECREF(code);
        }
        else
            r = PyErr_Occurred() ? -1 : fcall(st, gw, F_ON_EVENT, ev);
        Py_DECREF(ev);
        if (r < 0)
            goto done;
    }
    if (Py_TYPE(cmd) == st->place_t && fbump(st, a[F_METRICS], F_ORDERS) < 0)
        goto done;
    if ((PySet_GET_SIZE(a[F_DIRTY_BAL]) || PySet_GET_SIZE(a[F_DIRTY_TICK])) &&
        fcall(st, gw, F_DIRTY_SOON, NULL) < 0)
        goto done;
    ret = Py_NewRef(Py_None);
done:
    for (int k = 0; k <= F_METRICS; k++)
        Py_XDECREF(a[k]);
    return ret;
}

/* ------------------------------------------------------------------ the durable replies */

/* replies(gateway, batch, future)
 *     Gateway._batch_durable(batch, future): a journal batch is durable, so its replies (built
 *     at submit time) are queued and the place_order outcomes remembered for retries
 *     (Idempotency.remember). A failed or cancelled batch, or a batch of an unusual shape,
 *     goes to the Python method, the reference. */

/* Idempotency.remember's (outcome, terms, final) of an in-flight entry [outcome, cmd,
 * final] (batch_plain checked its shape): the terms are _terms(cmd), read from its slots */
static PyObject *
kept_entry(gstate *st, PyObject *entry)
{
    PyObject *cmd = PyList_GET_ITEM(entry, 1);
    PyObject *terms = PyTuple_New(PL_POST_ONLY - PL_INSTRUMENT + 1);
    if (terms == NULL)
        return NULL;
    for (int i = PL_INSTRUMENT; i <= PL_POST_ONLY; i++) {
        PyObject *v = SL(cmd, st->place_off[i]);
        PyTuple_SET_ITEM(terms, i - PL_INSTRUMENT, Py_NewRef(v ? v : Py_None));
    }
    untracked(terms);
    /* the outcome of a refusal and the final state are tuples made in Python */
    PyObject *outcome = PyList_GET_ITEM(entry, 0), *final = PyList_GET_ITEM(entry, 2);
    if (PyTuple_CheckExact(outcome))
        untracked(outcome);
    if (PyTuple_CheckExact(final))
        untracked(final);
    PyObject *kept = PyTuple_Pack(3, outcome, terms, final);
    Py_DECREF(terms);
    return untracked(kept);
}

static int
remember(gstate *st, PyObject *done, PyObject *inflight, PyObject *ring, Py_ssize_t window,
         PyObject *key,
         PyObject *outcome)
{
    /* inflight.pop(key, None); Idempotency.remember(key, outcome) */
    PyObject *r;
    if (PyDict_GetItemWithError(inflight, key) != NULL) {
        if (PyDict_DelItem(inflight, key) < 0)
            return -1;
    }
    else if (PyErr_Occurred())
        return -1;
    untracked(key); /* made in Python where the gate did not take the order */
    int known = PyDict_Contains(done, key);
    if (known < 0)
        return -1;
    if (!known) {
        if ((r = PyObject_CallMethodOneArg(ring, st->s_append, key)) == NULL)
            return -1;
        Py_DECREF(r);
    }
    PyObject *kept = kept_entry(st, outcome);
    int e = kept == NULL || PyDict_SetItem(done, key, kept) < 0;
    Py_XDECREF(kept);
    if (e)
        return -1;
    if (PyDict_GET_SIZE(done) > window) { /* d.pop(ring.popleft(), None) */
        if ((r = PyObject_CallMethodNoArgs(ring, st->s_popleft)) == NULL)
            return -1;
        int has = PyDict_Contains(done, r);
        int e = has < 0 || (has && PyDict_DelItem(done, r) < 0);
        Py_DECREF(r);
        if (e)
            return -1;
    }
    return 0;
}

static int
batch_plain(gstate *st, PyObject *batch)
{
    /* a list of (Session, req_id, bytes, key, entry): a key None or a tuple, its entry
     * Gateway.place's [outcome, PlaceOrder, final] */
    if (!PyList_CheckExact(batch))
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(batch); i++) {
        PyObject *t = PyList_GET_ITEM(batch, i);
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 5 ||
            Py_TYPE(PyTuple_GET_ITEM(t, 0)) != st->sess_t ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(t, 2)))
            return 0;
        PyObject *key = PyTuple_GET_ITEM(t, 3), *entry = PyTuple_GET_ITEM(t, 4);
        if (key != Py_None &&
            (!PyTuple_CheckExact(key) || !PyList_CheckExact(entry) ||
             PyList_GET_SIZE(entry) != 3 || Py_TYPE(PyList_GET_ITEM(entry, 1)) != st->place_t))
            return 0;
    }
    return 1;
}

static PyObject *
replies(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gstate *st = state_of(self);
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "replies(gateway, batch, future)");
        return NULL;
    }
    PyObject *gw = args[0], *batch = args[1], *fut = args[2];
    PyObject *d[D_N] = {NULL}, *idem = NULL, *ret = NULL, *x = NULL;
    Py_ssize_t window = -1;
    int plain = st->fan_ready;
    if (plain) { /* a durable batch of the usual shape, and the idempotency memory's parts */
        PyObject *bf = attr(st, gw, I_BATCH_FUTURE);
        int mine = bf == fut;
        Py_XDECREF(bf);
        if (mine && PyObject_SetAttr(gw, st->I[I_BATCH_FUTURE], Py_None) < 0)
            return NULL;
        plain = (x = PyObject_CallMethodNoArgs(fut, st->s_cancelled)) == Py_False;
        Py_CLEAR(x);
        plain = plain && (x = PyObject_CallMethodNoArgs(fut, st->s_exception)) == Py_None;
        Py_CLEAR(x);
        if (PyErr_Occurred())
            return NULL;
        plain = plain && batch_plain(st, batch) &&
            (idem = PyObject_GetAttr(gw, st->s_idem)) != NULL;
        for (int k = 0; plain && k < D_N; k++)
            plain = (d[k] = PyObject_GetAttr(idem, st->D[k])) != NULL;
        plain = plain && PyDict_CheckExact(d[D_DONE]) && PyDict_CheckExact(d[D_INFLIGHT]) &&
                PyLong_CheckExact(d[D_WINDOW]) &&
                (window = PyLong_AsSsize_t(d[D_WINDOW])) >= 0;
        if (PyErr_Occurred())
            goto done;
    }
    if (!plain) {
        ret = PyObject_CallMethodObjArgs(gw, st->s_batch_durable, batch, fut, NULL);
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(batch); i++) {
        PyObject *t = Py_NewRef(PyList_GET_ITEM(batch, i));
        PyObject *key = PyTuple_GET_ITEM(t, 3);
        int e = (key != Py_None && remember(st, d[D_DONE], d[D_INFLIGHT], d[D_RING], window, key,
                                            PyTuple_GET_ITEM(t, 4)) < 0) ||
                sess_send(st, PyTuple_GET_ITEM(t, 0), PyTuple_GET_ITEM(t, 2)) < 0;
        Py_DECREF(t);
        if (e)
            goto done;
    }
    ret = Py_NewRef(Py_None);
done:
    for (int k = 0; k < D_N; k++)
        Py_XDECREF(d[k]);
    Py_XDECREF(idem);
    return ret;
}

/* idem_listen(idem, cmd, seq, ts, events)
 *     Gateway._idem_listen: an order remembered for retries that is now done (nothing left
 *     to fill) gets its final state: in its in-flight entry, or in a new kept entry, made
 *     untracked as remember() makes them. */
static PyObject *
idem_listen(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gstate *st = state_of(self);
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "idem_listen(idem, cmd, seq, ts, events)");
        return NULL;
    }
    if (!st->ready) {
        PyErr_SetString(PyExc_RuntimeError, "idem_listen: gate_setup was not called");
        return NULL;
    }
    PyObject *done = PyObject_GetAttr(args[0], st->D[D_DONE]);
    PyObject *inflight = done ? PyObject_GetAttr(args[0], st->D[D_INFLIGHT]) : NULL;
    PyObject *events = inflight ? PySequence_Fast(args[4], "idem_listen: events") : NULL;
    PyObject *ret = NULL;
    if (events == NULL)
        goto done;
    if (!PyDict_CheckExact(done) || !PyDict_CheckExact(inflight)) {
        PyErr_SetString(PyExc_TypeError, "idem_listen: done and inflight are not dicts");
        goto done;
    }
    for (Py_ssize_t i = 0; (PyDict_GET_SIZE(done) || PyDict_GET_SIZE(inflight)) &&
                           i < PySequence_Fast_GET_SIZE(events);
         i++) {
        PyObject *ev = PySequence_Fast_GET_ITEM(events, i);
        if (Py_TYPE(ev) != st->er_t)
            continue;
        PyObject *leaves = SL(ev, st->er_off[R_LEAVES]), *coid = SL(ev, st->er_off[R_COID]),
                 *acct = SL(ev, st->er_off[R_ACCOUNT]), *oid = SL(ev, st->er_off[R_OID]),
                 *status = SL(ev, st->er_off[R_STATUS]), *cum = SL(ev, st->er_off[R_CUM]);
        if (leaves == NULL || coid == NULL || coid == Py_None || acct == NULL || oid == NULL ||
            status == NULL || cum == NULL)
            continue;
        int some = PyObject_IsTrue(leaves);
        if (some < 0)
            goto done;
        if (some)
            continue;
        PyObject *key = untracked(PyTuple_Pack(2, acct, coid));
        PyObject *final = key ? untracked(PyTuple_Pack(3, oid, status, cum)) : NULL;
        int e = final == NULL;
        PyObject *x = e ? NULL : PyDict_GetItemWithError(inflight, key);
        if (x != NULL) { /* not durable yet: its batch remembers the entry (x[0][2] = final) */
            PyObject *entry = PySequence_GetItem(x, 0);
            e = entry == NULL || PySequence_SetItem(entry, 2, final) < 0;
            Py_XDECREF(entry);
        }
        else if (!e && !PyErr_Occurred()) {
            PyObject *kept = PyDict_GetItemWithError(done, key);
            if (kept != NULL) { /* done[key] = (kept[0], kept[1], final) */
                PyObject *a = PySequence_GetItem(kept, 0);
                PyObject *b = a ? PySequence_GetItem(kept, 1) : NULL;
                PyObject *n = b ? untracked(PyTuple_Pack(3, a, b, final)) : NULL;
                e = n == NULL || PyDict_SetItem(done, key, n) < 0;
                Py_XDECREF(a);
                Py_XDECREF(b);
                Py_XDECREF(n);
            }
        }
        e = e || PyErr_Occurred();
        Py_XDECREF(key);
        Py_XDECREF(final);
        if (e)
            goto done;
    }
    ret = Py_NewRef(Py_None);
done:
    Py_XDECREF(done);
    Py_XDECREF(inflight);
    Py_XDECREF(events);
    return ret;
}

static PyMethodDef gate_defs[] = {
    {"gate", (PyCFunction)(void (*)(void))gate, METH_FASTCALL,
     "gate(session, request) -> bool: a plain place/cancel/amend order request handled as "
     "Session.on_request would (False: not taken, nothing changed)."},
    {"gate_setup", gate_setup, METH_O, "gate_setup(cfg: dict): the classes and constants."},
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL,
     "fanout(gateway, cmd, seq, ts, events): Gateway.on_commit, the usual events in C."},
    {"fanout_setup", fanout_setup, METH_O, "fanout_setup(cfg: dict): what fanout needs."},
    {"replies", (PyCFunction)(void (*)(void))replies, METH_FASTCALL,
     "replies(gateway, batch, future): Gateway._batch_durable."},
    {"idem_listen", (PyCFunction)(void (*)(void))idem_listen, METH_FASTCALL,
     "idem_listen(idem, cmd, seq, ts, events): Gateway._idem_listen."},
    {"er_push", (PyCFunction)(void (*)(void))er_push, METH_FASTCALL,
     "er_push(seq, head, ev) -> bytes | None: the executions push of one execution report "
     "(exchange.server.protocol.ER_PUSH), or None: format it in Python."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *m)
{
    gstate *st = state_of(m);
    if ((st->zero = PyLong_FromLong(0)) == NULL || (st->one_ = PyLong_FromLong(1)) == NULL)
        return -1;
    for (int k = 0; k < I_N; k++) {
        if (inames[k] == NULL) { /* the enum and the names drifted apart */
            PyErr_SetString(PyExc_SystemError, "exchange.server._accel: a name is missing");
            return -1;
        }
        if ((st->I[k] = PyUnicode_InternFromString(inames[k])) == NULL)
            return -1;
    }
    for (int k = 0; k < F_N; k++)
        if ((st->F[k] = PyUnicode_InternFromString(fnames[k])) == NULL)
            return -1;
    for (int k = 0; k < D_N; k++)
        if ((st->D[k] = PyUnicode_InternFromString(dnames[k])) == NULL)
            return -1;
    if (!(st->s_cancelled = PyUnicode_InternFromString("cancelled")) ||
        !(st->s_exception = PyUnicode_InternFromString("exception")) ||
        !(st->s_append = PyUnicode_InternFromString("append")) ||
        !(st->s_popleft = PyUnicode_InternFromString("popleft")) ||
        !(st->s_idem = PyUnicode_InternFromString("idem")) ||
        !(st->s_batch_durable = PyUnicode_InternFromString("_batch_durable")))
        return -1;
    return 0;
}

/* every object the state holds, for traverse and clear */
#define STATE_OBJECTS(X)                                                                       \
    X(st->sess_t) X(st->place_t) X(st->cancel_t) X(st->amend_t) X(st->er_t) X(st->rejected_t) \
    X(st->prices) X(st->role_firm) X(st->exec_rejected) X(st->report_reply) X(st->bu_t)       \
    X(st->trade_t) X(st->er_head_fn) X(st->er_push_fn) X(st->push_cls) X(st->zero)            \
    X(st->one_) X(st->s_cancelled) X(st->s_exception) X(st->s_append) X(st->s_popleft)        \
    X(st->s_idem) X(st->s_batch_durable)

static int
module_traverse(PyObject *m, visitproc visit, void *arg)
{
    gstate *st = state_of(m);
#define VISIT(o) Py_VISIT(o);
    STATE_OBJECTS(VISIT)
#undef VISIT
    for (int k = 0; k < I_N; k++)
        Py_VISIT(st->I[k]);
    for (int k = 0; k < F_N; k++)
        Py_VISIT(st->F[k]);
    for (int k = 0; k < D_N; k++)
        Py_VISIT(st->D[k]);
    return 0;
}

static int
module_clear(PyObject *m)
{
    gstate *st = state_of(m);
    st->ready = st->fan_ready = 0;
#define CLEAR(o) Py_CLEAR(o);
    STATE_OBJECTS(CLEAR)
#undef CLEAR
    for (int k = 0; k < I_N; k++)
        Py_CLEAR(st->I[k]);
    for (int k = 0; k < F_N; k++)
        Py_CLEAR(st->F[k]);
    for (int k = 0; k < D_N; k++)
        Py_CLEAR(st->D[k]);
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
    .m_name = "exchange.server._accel",
    .m_doc = "The gateway's hot paths in C: the order gate, the executions fan-out and push, "
             "the durable replies.",
    .m_size = sizeof(gstate),
    .m_methods = gate_defs,
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
