/* exchange._hotpath.CorePath: the core's order path in C (ADR 0007, "The order path in C").
 *
 * Exchange.apply, _place, _cancel and _amend (exchange/core/exchange.py) and OrderBook's
 * add, remove, crosses and match (exchange/core/book.py) are the reference implementation;
 * this file does the same, step for step, on the same Python objects (the Exchange's dicts,
 * the sortedcontainers books, the slotted Order, Account, ExecutionReport, ... classes), so
 * the state, the events and state_hash are identical whichever path ran.
 * Exchange(accelerate=True) installs it when this extension is built; tests/test_book.py and
 * tests/test_core_accelerated.py compare the two command by command.
 *
 * What it takes, and what it leaves to Python:
 *   apply(cmd)    the sequence check, the dispatch and the reject events, for every command;
 *                 handlers other than place/cancel/amend are called as they are; then the
 *                 trade listeners, once the command has been applied.
 *   place(cmd)    a limit GTC, DAY or IOC order (post-only included) that passes every
 *                 check, in a segment open to all, resting or crossing: matching, self-trade
 *                 prevention, settlement of each fill. Everything
 *                 else - market and FOK orders, every reject, restricted segments, prices
 *                 or quantities of 2**31 or more, a value of an unexpected type - goes to
 *                 Exchange._place before anything has changed. Rare steps inside a fill
 *                 (units from a sub-quota lot or from several lots, self-trade cancels, an
 *                 IOC order's unfilled rest) call the same Python helpers the reference
 *                 calls.
 *   cancel(cmd)   a cancel of a live order; anything else goes to Exchange._cancel.
 *   amend(cmd)    an amend of a live order that passes every check, in place (a smaller
 *                 quantity at the same price) or out of the book and back through the
 *                 matcher; anything else goes to Exchange._amend.
 *
 * The checks run in the reference's order and decide only "take it or hand it over"; the
 * reference then decides the reject. So every reject code and message comes from Python.
 *
 * Numbers: the checks read Python ints as int64 and hand anything else to Python. Inside a
 * fill, amounts are computed in 128 bits from int64 inputs and stored back as Python ints;
 * a balance that does not fit int64 is updated with Python's own arithmetic.
 *
 * Only CPython's public API (ADR 0013): objects are allocated and freed by CPython, every
 * update makes a new int, and ints are read with PyLong_AsLongLongAndOverflow, so the same
 * source builds for 3.11, 3.12 and 3.13 and none of it depends on an interpreter's layout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "../_jsonw.h" /* is_str */

/* ------------------------------------------------------------------ classes and slots */

typedef struct {
    int n;
    const char *const *names;
} cls_t;

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

enum { A_FIRM, A_STP, A_CAN_TRADE, A_SYSTEM, A_CASH, A_CASH_RES, A_HOLDINGS, A_ORDERS,
       A_COIDS, A_N };
static const char *const acct_names[A_N] = {"firm_id", "stp_policy", "can_trade", "system",
                                            "cash", "cash_reserved", "holdings", "orders",
                                            "coids"};
enum { H_TOTAL, H_RESERVED, H_LOTS, H_N };
static const char *const hold_names[H_N] = {"total", "reserved", "lots"};
enum { I_SYMBOL, I_BAND_LO, I_BAND_HI, I_HALTED, I_N };
static const char *const instr_names[I_N] = {"symbol", "band_lo", "band_hi", "halted"};
enum { R_TICK, R_LOT, R_MAX_QTY, R_FEE_BPS, R_ACCESS, R_N };
static const char *const rules_names[R_N] = {"tick", "lot", "max_order_qty", "fee_bps",
                                             "access"};
/* the day statistics are the board's (the book's), not the instrument's */
enum { B_INSTRUMENT, B_SEGMENT, B_BIDS, B_ASKS, B_ORDERS, B_CHANGES, B_SEQ, B_DAY_OPEN,
       B_DAY_HIGH, B_DAY_LOW, B_LAST, B_DAY_VOLUME, B_DAY_NOTIONAL, B_DAY_TRADES, B_N };
static const char *const book_names[B_N] = {"instrument", "segment", "bids", "asks", "orders",
                                            "changes", "seq", "day_open", "day_high",
                                            "day_low", "last", "day_volume", "day_notional",
                                            "day_trades"};
enum { O_ID, O_ACCOUNT, O_COID, O_INSTRUMENT, O_SEGMENT, O_SIDE, O_PRICE, O_QTY, O_LEAVES,
       O_CUM, O_TIF, O_POST_ONLY, O_RESERVED, O_STATUS, O_SEQ, O_PREV, O_NEXT, O_N };
static const char *const order_names[O_N] = {
    "order_id", "account", "client_order_id", "instrument", "segment", "side", "price", "qty",
    "leaves", "cum_qty", "tif", "post_only", "reserved", "status", "seq", "prev", "next"};
enum { E_ACCOUNT, E_ORDER_ID, E_COID, E_INSTRUMENT, E_SEGMENT, E_SIDE, E_EXEC_TYPE, E_STATUS,
       E_PRICE, E_QTY, E_LAST_QTY, E_LAST_PX, E_CUM, E_LEAVES, E_REASON, E_TRADE_ID, E_FEE,
       E_LIQUIDITY, E_TS, E_N };
static const char *const er_names[E_N] = {
    "account", "order_id", "client_order_id", "instrument", "segment", "side", "exec_type",
    "order_status", "price", "qty", "last_qty", "last_px", "cum_qty", "leaves_qty", "reason",
    "trade_id", "fee", "liquidity", "ts"};
enum { T_ID, T_INSTRUMENT, T_SEGMENT, T_PRICE, T_QTY, T_BUYER, T_SELLER, T_BUY_OID,
       T_SELL_OID, T_AGGRESSOR, T_BUYER_FEE, T_SELLER_FEE, T_SPLIT, T_TS, T_N };
static const char *const trade_names[T_N] = {
    "trade_id", "instrument", "segment", "price", "qty", "buyer", "seller", "buy_order_id",
    "sell_order_id", "aggressor", "buyer_fee", "seller_fee", "proceeds_split", "ts"};
enum { U_INSTRUMENT, U_SEGMENT, U_BOOK_SEQ, U_CHANGES, U_N };
static const char *const bu_names[U_N] = {"instrument", "segment", "book_seq", "changes"};
/* the commands' own fields; their envelope (seq, ts) is apply's arguments, not a slot */
enum { P_ACCOUNT, P_INSTRUMENT, P_SEGMENT, P_SIDE, P_QTY, P_PRICE, P_TYPE, P_TIF, P_POST_ONLY,
       P_COID, P_N };
static const char *const place_names[P_N] = {
    "account", "instrument", "segment", "side", "qty", "price", "order_type", "tif",
    "post_only", "client_order_id"};
enum { C_ACCOUNT, C_ORDER_ID, C_COID, C_N };
static const char *const cancel_names[C_N] = {"account", "order_id", "client_order_id"};
enum { M_ACCOUNT, M_ORDER_ID, M_COID, M_QTY, M_PRICE, M_N };
static const char *const amend_names[M_N] = {"account", "order_id", "client_order_id", "qty",
                                             "price"};
enum { L_QTY, L_HEAD, L_TAIL, L_N };
static const char *const level_names[L_N] = {"qty", "head", "tail"};
enum { J_COMMAND, J_CODE, J_MESSAGE, J_N };
static const char *const rej_names[J_N] = {"command", "code", "message"};
enum { X_LAST_SEQ, X_NOW, X_NEXT_ORDER_ID, X_NEXT_TRADE_ID, X_MARKET_HALTED,
       X_EMIT_BOOK_UPDATES, X_RULES, X_INSTRUMENTS, X_BOOKS, X_HALTED_BOOKS, X_ACCOUNTS,
       X_TRADE_LISTENERS, X_HANDLERS, X_N };
static const char *const ex_names[X_N] = {
    "last_seq", "now", "next_order_id", "next_trade_id", "market_halted", "emit_book_updates",
    "_rules", "instruments", "books", "halted_books", "accounts", "trade_listeners",
    "_handlers"};


enum { K_ACCOUNT, K_HOLDING, K_INSTRUMENT, K_RULES, K_BOOK, K_ORDER, K_ER, K_TRADE, K_BU,
       K_PLACE, K_CANCEL, K_LEVEL, K_EXCHANGE, K_AMEND, K_REJECTED, K_N };
static const cls_t classes[K_N] = {
    {A_N, acct_names}, {H_N, hold_names},   {I_N, instr_names}, {R_N, rules_names},
    {B_N, book_names}, {O_N, order_names},  {E_N, er_names},    {T_N, trade_names},
    {U_N, bu_names},   {P_N, place_names},  {C_N, cancel_names}, {L_N, level_names},
    {X_N, ex_names},   {M_N, amend_names},  {J_N, rej_names},
};
/* the configuration keys of the classes, in the order of K_* */
static const char *const class_keys[K_N] = {
    "Account", "Holding", "Instrument", "SegmentRules", "OrderBook", "Order",
    "ExecutionReport", "Trade", "BookUpdate", "PlaceOrder", "CancelOrder", "Level",
    "Exchange", "AmendOrder", "CommandRejected"};


/* ------------------------------------------------------------------ constants */

/* strings and objects taken from the Python modules, so that what is stored is what the
 * reference stores */
enum { S_BUY, S_SELL, S_GTC, S_DAY, S_LIMIT, S_ST_NEW, S_ST_PARTIAL, S_ST_FILLED,
       S_ST_CANCELED, S_EXEC_NEW, S_EXEC_TRADE, S_EXEC_CANCELED, S_MAKER, S_TAKER,
       S_CANCELED_BY_CLIENT, S_SELF_TRADE_PREVENTED, S_STP_RESTING, S_STP_INCOMING,
       S_STP_BOTH, S_ACCESS_ALL, S_LOT_SUB_QUOTA, S_LOT_PURCHASE, S_EXCHANGE_ACCOUNT,
       S_TAKE_UNITS, S_SEQUENCE_ERROR, S_REJECT, S_IOC, S_UNFILLED_IOC, S_EXEC_REPLACED,
       S_UNKNOWN_ORDER, S_NO_LIVE_ORDER, S_CANCEL_TYPE, S_N };
static const char *const const_keys[S_N] = {
    "BUY", "SELL", "GTC", "DAY", "LIMIT", "ST_NEW", "ST_PARTIAL", "ST_FILLED", "ST_CANCELED",
    "EXEC_NEW", "EXEC_TRADE", "EXEC_CANCELED", "MAKER", "TAKER", "CANCELED_BY_CLIENT",
    "SELF_TRADE_PREVENTED", "STP_CANCEL_RESTING", "STP_CANCEL_INCOMING", "STP_CANCEL_BOTH",
    "ACCESS_ALL", "LOT_SUB_QUOTA", "LOT_PURCHASE", "EXCHANGE_ACCOUNT", "take_units",
    "SequenceError", "Reject", "IOC", "UNFILLED_IOC", "EXEC_REPLACED", "UNKNOWN_ORDER",
    "NO_LIVE_ORDER", "CANCEL_TYPE"};

/* names of attributes and methods */
enum { N_PLACE, N_CANCEL, N_REJECTED,
       N_UNKNOWN, N_RELEASE, N_FORGET, N_ER, N_SPLIT, N_STARTSWITH, N_AMEND, N_N };
static const char *const name_strs[N_N] = {
    "_place", "_cancel", "_rejected",
    "_unknown_command", "_release", "_forget", "_er", "_split_proceeds", "startswith",
    "_amend"};

#define I31 (1LL << 31)

/* A book side's SortedList, found once (side_of, below) */
typedef struct {
    PyObject *map, *sl_dict, *lists, *maxes, *index;
} side_t;
#define SIDES 32

enum { PB_ADD, PB_REMOVE, PB_CROSSES, PB_MATCH, PB_N }; /* the book methods (book_defs) */

/* The module's state: what setup() was told, the interned names, the book sides seen. Each
 * CorePath keeps a pointer to it (its type holds the module, so the state outlives it); the
 * book methods reach it through their descriptor (BookMethod, below). */
typedef struct {
    /* setup(): the classes, their slots' offsets, the constants */
    PyTypeObject *types[K_N];
    Py_ssize_t acct_off[A_N], hold_off[H_N], instr_off[I_N], rules_off[R_N], book_off[B_N],
        order_off[O_N], er_off[E_N], trade_off[T_N], bu_off[U_N], place_off[P_N],
        cancel_off[C_N], level_off[L_N], ex_off[X_N], amend_off[M_N], rej_off[J_N];
    Py_ssize_t *offs[K_N]; /* offs[k]: the offsets array of class k (one of the above) */
    PyObject *K[S_N];
    unsigned long long have_cls, have_const; /* bit masks of what setup() was given */
    int configured;                          /* every class and constant given */
    /* the SortedList layout: sortedcontainers' attribute names, checked by
     * exchange.core._sc_layout (setup's "sc_layout") */
    PyObject *sc_layout;  /* SortedDict -> its SortedList's (__dict__, sublists, maxima, index) */
    PyObject *sc_len, *sc_load; /* the SortedList.__dict__ keys of its length and load */
    /* made with the module */
    PyObject *N[N_N];
    PyObject *zero; /* the int 0 */
    PyTypeObject *corepath_type, *bookmethod_type;
    /* book_methods(): the Python functions (the reference and fallback) */
    PyObject *py_book[PB_N];
    /* book sides seen (side_of) */
    side_t sides[SIDES];
    int sides_next;
} cstate;

static struct PyModuleDef module_def;

static inline cstate *
state_of(PyObject *module)
{
    return (cstate *)PyModule_GetState(module);
}


/* ------------------------------------------------------------------ small helpers */

static inline int
rd64(PyObject *v, long long *out)
{
    /* v as int64: 0, or -1 (no error set) when v is not an exact int that fits */
    if (v == NULL || !PyLong_CheckExact(v))
        return -1;
    int ovf;
    long long x = PyLong_AsLongLongAndOverflow(v, &ovf);
    if (ovf)
        return -1;
    *out = x;
    return 0;
}

static int
long_sign(PyObject *v)
{
    /* the sign of the int v (-1, 0, 1) through the public API: the overflow flag of
     * PyLong_AsLongLongAndOverflow carries it for an int beyond 64 bits */
    int ovf;
    long long x = PyLong_AsLongLongAndOverflow(v, &ovf);
    if (ovf)
        return ovf;
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return (x > 0) - (x < 0);
}

static PyObject *
from128(__int128 v)
{
    if (v >= LLONG_MIN && v <= LLONG_MAX)
        return PyLong_FromLongLong((long long)v);
    /* (hi << 64) | lo from two 64-bit halves: rare (an amount beyond int64), so the
     * number protocol is fast enough and needs no private byte-array call */
    PyObject *hi = PyLong_FromLongLong((long long)(v >> 64));
    PyObject *lo = PyLong_FromUnsignedLongLong((unsigned long long)v);
    PyObject *sh = PyLong_FromLong(64), *r = NULL;
    if (hi != NULL && lo != NULL && sh != NULL) {
        PyObject *t = PyNumber_Lshift(hi, sh);
        if (t != NULL) {
            r = PyNumber_Or(t, lo);
            Py_DECREF(t);
        }
    }
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(sh);
    return r;
}

static int
rd128(PyObject *v, __int128 *out)
{
    /* an int of up to 128 bits; -1 with an error set otherwise */
    long long x;
    if (rd64(v, &x) == 0) {
        *out = x;
        return 0;
    }
    if (!PyLong_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "CorePath: an amount is not an int");
        return -1;
    }
    /* beyond int64: split into the high and low 64 bits with the number protocol (v >> 64
     * must fit a signed 64-bit int, as a 16-byte signed conversion demands: OverflowError
     * otherwise) */
    PyObject *sh = PyLong_FromLong(64), *mask = PyLong_FromUnsignedLongLong(~0ULL);
    PyObject *hi = NULL, *lo = NULL;
    int rc = -1;
    if (sh != NULL && mask != NULL && (hi = PyNumber_Rshift(v, sh)) != NULL &&
        (lo = PyNumber_And(v, mask)) != NULL) {
        int ovf;
        long long h = PyLong_AsLongLongAndOverflow(hi, &ovf);
        if (ovf)
            PyErr_SetString(PyExc_OverflowError, "int too big to convert");
        else if (!(h == -1 && PyErr_Occurred())) {
            unsigned long long l = PyLong_AsUnsignedLongLong(lo);
            if (!(l == (unsigned long long)-1 && PyErr_Occurred())) {
                *out = (__int128)(((unsigned __int128)(unsigned long long)h << 64) | l);
                rc = 0;
            }
        }
    }
    Py_XDECREF(sh);
    Py_XDECREF(mask);
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    return rc;
}

static inline void
set_slot(PyObject *o, Py_ssize_t off, PyObject *v)
{
    /* store v (a new reference, stolen) in o's slot */
    PyObject *old = SLOT(o, off);
    SLOT(o, off) = v;
    Py_XDECREF(old);
}

static inline void
set_ref(PyObject *o, Py_ssize_t off, PyObject *v)
{
    Py_INCREF(v);
    set_slot(o, off, v);
}

static int
set_i(PyObject *o, Py_ssize_t off, __int128 v)
{
    PyObject *x = from128(v);
    if (x == NULL)
        return -1;
    set_slot(o, off, x);
    return 0;
}

static PyObject *
num_add(PyObject *cur, __int128 delta)
{
    /* cur + delta, a new reference, for an int cur of any size */
    long long x;
    if (rd64(cur, &x) == 0)
        return from128((__int128)x + delta);
    if (cur == NULL) {
        PyErr_SetString(PyExc_AttributeError, "CorePath: slot not set");
        return NULL;
    }
    PyObject *d = from128(delta);
    if (d == NULL)
        return NULL;
    PyObject *r = PyNumber_Add(cur, d);
    Py_DECREF(d);
    return r;
}

static int
slot_add(PyObject *o, Py_ssize_t off, __int128 delta)
{
    /* o.<slot> += delta, for an int of any size */
    PyObject *cur = SLOT(o, off), *r;
    long long x;
    if (rd64(cur, &x) == 0)
        r = from128((__int128)x + delta);
    else
        r = num_add(cur, delta);
    if (r == NULL)
        return -1;
    set_slot(o, off, r);
    return 0;
}

static int
slot_sub(PyObject *o, Py_ssize_t off, PyObject *v)
{
    /* o.<slot> -= v, for ints of any size */
    long long x;
    if (rd64(v, &x) == 0)
        return slot_add(o, off, -(__int128)x);
    if (SLOT(o, off) == NULL) {
        PyErr_SetString(PyExc_AttributeError, "CorePath: slot not set");
        return -1;
    }
    PyObject *r = PyNumber_Subtract(SLOT(o, off), v);
    if (r == NULL)
        return -1;
    set_slot(o, off, r);
    return 0;
}

static inline int
is_str_noerr(PyObject *v, PyObject *k)
{
    int r = is_str(v, k);
    if (PyErr_Occurred())
        PyErr_Clear();
    return r;
}

static PyObject *
alloc(cstate *st, int k)
{
    /* object.__new__(cls) for Order and the events. They hold only str, int, bool, None and
     * tuples of those, so they can never be part of a reference cycle: like CPython's own
     * untracking of such tuples and dicts, they are left out of the cyclic GC, which then
     * does not walk every resting order and every report (it was ~25 % of the time). */
    PyTypeObject *t = st->types[k];
    PyObject *o = t->tp_alloc(t, 0);
    if (o != NULL && PyObject_GC_IsTracked(o))
        PyObject_GC_UnTrack(o);
    return o;
}

static PyObject *
untracked(PyObject *t)
{
    /* a tuple of atomic values (or of such tuples): see alloc */
    if (t != NULL && PyObject_GC_IsTracked(t))
        PyObject_GC_UnTrack(t);
    return t;
}

static int
list_append_new(PyObject *list, PyObject *item)
{
    /* append item (a new reference, stolen) */
    if (item == NULL)
        return -1;
    int r = PyList_Append(list, item);
    Py_DECREF(item);
    return r;
}

static PyObject *
new_er(cstate *st, PyObject *account, PyObject *oid, PyObject *coid, PyObject *instrument,
       PyObject *segment, PyObject *side, PyObject *exec_type, PyObject *status,
       PyObject *price, PyObject *qty, PyObject *last_qty, PyObject *last_px, PyObject *cum,
       PyObject *leaves, PyObject *reason, PyObject *trade_id, PyObject *fee,
       PyObject *liquidity, PyObject *ts)
{
    /* ExecutionReport(...) built as the reference builds it (object.__new__ + slot stores);
     * borrowed arguments */
    PyObject *er = alloc(st, K_ER);
    if (er == NULL)
        return NULL;
    PyObject *v[E_N] = {account, oid, coid, instrument, segment, side, exec_type, status,
                        price, qty, last_qty, last_px, cum, leaves, reason, trade_id, fee,
                        liquidity, ts};
    for (int i = 0; i < E_N; i++) {
        Py_INCREF(v[i]);
        SLOT(er, st->er_off[i]) = v[i];
    }
    return er;
}

static PyObject *
new_bu(cstate *st, PyObject *instrument, PyObject *segment, PyObject *seq, PyObject *changes)
{
    /* BookUpdate: borrowed arguments except changes (stolen) */
    PyObject *bu = alloc(st, K_BU);
    if (bu == NULL) {
        Py_DECREF(changes);
        return NULL;
    }
    Py_INCREF(instrument);
    SLOT(bu, st->bu_off[U_INSTRUMENT]) = instrument;
    Py_INCREF(segment);
    SLOT(bu, st->bu_off[U_SEGMENT]) = segment;
    Py_INCREF(seq);
    SLOT(bu, st->bu_off[U_BOOK_SEQ]) = seq;
    SLOT(bu, st->bu_off[U_CHANGES]) = changes;
    return bu;
}

static PyObject *
tuple_of(Py_ssize_t n, PyObject *a, PyObject *b, PyObject *c)
{
    /* (a,) or (a, b, c), untracked (see alloc): PyTuple_Pack without its va_list; borrowed
     * items */
    PyObject *t = PyTuple_New(n);
    if (t == NULL)
        return NULL;
    PyObject *v[3] = {a, b, c};
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, Py_NewRef(v[i]));
    return untracked(t);
}

static PyObject *
change(PyObject *side, PyObject *price, PyObject *lq)
{
    /* (side, price, lq), untracked; lq: a new reference, stolen */
    if (lq == NULL)
        return NULL;
    PyObject *t = tuple_of(3, side, price, lq);
    Py_DECREF(lq);
    return t;
}

static int
emit_book_update(cstate *st, PyObject *ex, PyObject *book, PyObject *last_change, PyObject *events)
{
    /* the reference's tail of _place/_cancel: pending L2 changes (then last_change, a new
     * reference or NULL, stolen) become one BookUpdate when book updates are on, and the
     * book's change list is cleared either way. The BookUpdate goes into the last item of
     * events when the caller left it empty (NULL) for it, which is removed otherwise. */
    PyObject *changes = SLOT(book, st->book_off[B_CHANGES]);
    PyObject *tup = NULL;
    int r = -1;
    if (!PyList_Check(changes)) {
        PyErr_SetString(PyExc_TypeError, "CorePath: book.changes is not a list");
        goto done;
    }
    PyObject *emit = SLOT(ex, st->ex_off[X_EMIT_BOOK_UPDATES]);
    int on = emit == Py_True ? 1 : emit == NULL || emit == Py_False ? 0 : PyObject_IsTrue(emit);
    if (on < 0)
        goto done;
    Py_ssize_t pending = PyList_GET_SIZE(changes);
    if (!on || (pending == 0 && last_change == NULL)) {
        r = pending ? PyList_SetSlice(changes, 0, PY_SSIZE_T_MAX, NULL) : 0;
        goto done;
    }
    if (pending == 0) /* the usual case: the command's own change is the only one */
        tup = tuple_of(1, last_change, NULL, NULL);
    else {
        if (last_change != NULL && PyList_Append(changes, last_change) < 0)
            goto done;
        tup = untracked(PyList_AsTuple(changes));
        if (tup == NULL || PyList_SetSlice(changes, 0, PY_SSIZE_T_MAX, NULL) < 0)
            goto done;
    }
    if (tup == NULL)
        goto done;
    long long bseq;
    if (rd64(SLOT(book, st->book_off[B_SEQ]), &bseq) < 0) {
        PyErr_SetString(PyExc_TypeError, "CorePath: book.seq is not an int");
        goto done;
    }
    if (set_i(book, st->book_off[B_SEQ], (__int128)bseq + 1) < 0)
        goto done;
    PyObject *sq = SLOT(book, st->book_off[B_SEQ]);
    PyObject *bu = new_bu(st, SLOT(book, st->book_off[B_INSTRUMENT]),
                          SLOT(book, st->book_off[B_SEGMENT]),
                          sq, tup);
    tup = NULL;
    Py_ssize_t n = PyList_GET_SIZE(events);
    if (bu != NULL && n && PyList_GET_ITEM(events, n - 1) == NULL) {
        PyList_SET_ITEM(events, n - 1, bu); /* the slot the caller reserved */
        r = 0;
    }
    else
        r = list_append_new(events, bu);
done:
    Py_XDECREF(tup);
    Py_XDECREF(last_change);
    if (r == 0 && PyList_GET_SIZE(events) && PyList_GET_ITEM(events, PyList_GET_SIZE(events) - 1)
        == NULL)
        r = PyList_SetSlice(events, PyList_GET_SIZE(events) - 1, PyList_GET_SIZE(events), NULL);
    return r;
}

/* ------------------------------------------------------------------ sortedcontainers */

/* A book side is a SortedDict: a dict (key -> Level) plus a SortedList of its keys, kept in
 * sorted sublists. These mirror book.first_key, open_level and close_first_level: the same
 * guarded fast path on the single-sublist case, the public API otherwise. */

/* Each book side's SortedList is found once. Its parts are private to sortedcontainers, so
 * their names live in one place, exchange/core/_sc_layout.py, which setup() has check the
 * installed release's layout (an error naming the version when it changed): parts(map) gives
 * the SortedList's __dict__ (its length and load, under the names sc_len and sc_load) and its
 * three lists (the sorted sublists, their maxima, the positional index). The lists are made
 * in the SortedList's __init__ and only changed in place afterwards, so they are kept; this
 * function is the one place that checks what it was given. The table holds references, so an
 * address cannot be reused. */

static side_t *
side_of(cstate *st, PyObject *map)
{
    for (int i = 0; i < SIDES; i++)
        if (st->sides[i].map == map)
            return &st->sides[i];
    if (st->sc_layout == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "CorePath: setup() has not had OrderBook");
        return NULL;
    }
    PyObject *parts = PyObject_CallOneArg(st->sc_layout, map);
    if (parts == NULL)
        return NULL;
    if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 4 ||
        !PyDict_CheckExact(PyTuple_GET_ITEM(parts, 0)) ||
        !PyList_CheckExact(PyTuple_GET_ITEM(parts, 1)) ||
        !PyList_CheckExact(PyTuple_GET_ITEM(parts, 2)) ||
        !PyList_CheckExact(PyTuple_GET_ITEM(parts, 3))) {
        Py_DECREF(parts);
        PyErr_SetString(PyExc_TypeError, "CorePath: unexpected SortedList layout "
                                         "(exchange.core._sc_layout.parts)");
        return NULL;
    }
    PyObject *sl_dict = Py_NewRef(PyTuple_GET_ITEM(parts, 0));
    PyObject *lists = Py_NewRef(PyTuple_GET_ITEM(parts, 1));
    PyObject *maxes = Py_NewRef(PyTuple_GET_ITEM(parts, 2));
    PyObject *index = Py_NewRef(PyTuple_GET_ITEM(parts, 3));
    Py_DECREF(parts);
    side_t *e = &st->sides[st->sides_next];
    st->sides_next = (st->sides_next + 1) % SIDES;
    Py_XSETREF(e->map, Py_NewRef(map));
    Py_XSETREF(e->sl_dict, sl_dict);
    Py_XSETREF(e->lists, lists);
    Py_XSETREF(e->maxes, maxes);
    Py_XSETREF(e->index, index);
    return e;
}

static int
best_key(cstate *st, PyObject *side_map, PyObject **key)
{
    /* 1: *key (borrowed) is the smallest key (book.first_key); 0: the side is empty */
    if (PyDict_GET_SIZE(side_map) == 0)
        return 0;
    side_t *s = side_of(st, side_map);
    if (s == NULL)
        return -1;
    PyObject *first;
    if (PyList_GET_SIZE(s->lists) == 0 || !PyList_CheckExact(first = PyList_GET_ITEM(s->lists, 0))
        || PyList_GET_SIZE(first) == 0) {
        PyErr_SetString(PyExc_TypeError, "CorePath: unexpected SortedList layout");
        return -1;
    }
    *key = PyList_GET_ITEM(first, 0);
    return 1;
}

static PyObject *
sl_fast(cstate *st, side_t *s, Py_ssize_t *load)
{
    /* the one sublist when the SortedList is one sublist with no positional index (the
     * guard of book.open_level/close_first_level), borrowed; NULL (no error) otherwise */
    PyObject *first;
    if (PyList_GET_SIZE(s->lists) != 1 || PyList_GET_SIZE(s->index) != 0 ||
        !PyList_CheckExact(first = PyList_GET_ITEM(s->lists, 0)))
        return NULL;
    long long lo;
    if (rd64(PyDict_GetItemWithError(s->sl_dict, st->sc_load), &lo) < 0)
        return NULL;
    *load = (Py_ssize_t)lo;
    return first;
}

static int
sl_len_add(cstate *st, side_t *s, long long delta)
{
    long long x;
    if (rd64(PyDict_GetItemWithError(s->sl_dict, st->sc_len), &x) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "CorePath: the SortedList's length is not an int");
        return -1;
    }
    PyObject *v = PyLong_FromLongLong(x + delta);
    if (v == NULL)
        return -1;
    int r = PyDict_SetItem(s->sl_dict, st->sc_len, v);
    Py_DECREF(v);
    return r;
}

static int
set_max(side_t *s, PyObject *first)
{
    /* the maxima's first = first[-1] */
    if (PyList_GET_SIZE(s->maxes) < 1) {
        PyErr_SetString(PyExc_TypeError, "CorePath: unexpected SortedList layout");
        return -1;
    }
    PyObject *last = PyList_GET_ITEM(first, PyList_GET_SIZE(first) - 1);
    return PyList_SetItem(s->maxes, 0, Py_NewRef(last));
}

static Py_ssize_t
bisect(PyObject *first, long long kv, int right)
{
    /* bisect_left/right over int64 keys; -1 if a key is not one */
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(first);
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        long long m;
        if (rd64(PyList_GET_ITEM(first, mid), &m) < 0)
            return -1;
        if (m < kv || (right && m == kv))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int
open_level(cstate *st, PyObject *side_map, PyObject *k, long long kv, PyObject *level)
{
    /* side_map[k] = level for a new key: book.open_level */
    side_t *s = side_of(st, side_map);
    if (s == NULL)
        return -1;
    Py_ssize_t load = 0, at;
    PyObject *first = sl_fast(st, s, &load);
    if (first != NULL && PyList_GET_SIZE(first) < (load << 1) &&
        (at = bisect(first, kv, 1)) >= 0) { /* insort = insort_right */
        if (PyList_Insert(first, at, k) < 0 || set_max(s, first) < 0 || sl_len_add(st, s, 1) < 0)
            return -1;
        return PyDict_SetItem(side_map, k, level);
    }
    if (PyErr_Occurred())
        return -1;
    return PyObject_SetItem(side_map, k, level);
}

static int
del_level(cstate *st, PyObject *side_map, PyObject *k, long long kv)
{
    /* del side_map[k]: SortedDict.__delitem__, and while the keys are one sublist with no
     * positional index the same steps SortedList.remove/_delete take there (bisect, delete,
     * length, maximum) without its three Python-level calls; book.close_first_level is the
     * first-key case of this */
    side_t *s = side_of(st, side_map);
    if (s == NULL)
        return -1;
    Py_ssize_t load = 0, at;
    PyObject *first = sl_fast(st, s, &load);
    long long found;
    if (first != NULL && PyList_GET_SIZE(first) > 1 && (at = bisect(first, kv, 0)) >= 0 &&
        at < PyList_GET_SIZE(first) && rd64(PyList_GET_ITEM(first, at), &found) == 0 &&
        found == kv) {
        Py_INCREF(k); /* first[at] may hold the only other reference */
        int e = PyList_SetSlice(first, at, at + 1, NULL) < 0 || sl_len_add(st, s, -1) < 0 ||
                set_max(s, first) < 0 || PyDict_DelItem(side_map, k) < 0;
        Py_DECREF(k);
        return e ? -1 : 0;
    }
    if (PyErr_Occurred())
        return -1;
    return PyObject_DelItem(side_map, k);
}

static inline PyObject *
side_key(PyObject *price, long long pv, int buy)
{
    /* a book side's key for price (a new reference): -price for bids; for asks the price
     * object itself, as OrderBook.add keys them */
    return buy ? PyLong_FromLongLong(-pv) : Py_NewRef(price);
}

/* A level's queue: a doubly linked list from level.head to level.tail through the orders'
 * prev/next slots (book.append and book.unlink). An unset slot reads as None. */

static inline PyObject *
lnk(PyObject *o, Py_ssize_t off)
{
    PyObject *v = SLOT(o, off);
    return v ? v : Py_None;
}

static void
lv_append(cstate *st, PyObject *level, PyObject *o)
{
    PyObject *tail = lnk(level, st->level_off[L_TAIL]);
    set_ref(o, st->order_off[O_PREV], tail);
    set_ref(o, st->order_off[O_NEXT], Py_None);
    set_ref(tail == Py_None ? level : tail,
            tail == Py_None ? st->level_off[L_HEAD] : st->order_off[O_NEXT], o);
    set_ref(level, st->level_off[L_TAIL], o);
}

static void
lv_unlink(cstate *st, PyObject *level, PyObject *o)
{
    /* the caller holds a reference to o; o's slots hold p and n until they are cleared */
    PyObject *p = lnk(o, st->order_off[O_PREV]), *n = lnk(o, st->order_off[O_NEXT]);
    set_ref(p == Py_None ? level : p, p == Py_None ? st->level_off[L_HEAD] : st->order_off[O_NEXT],
            n);
    set_ref(n == Py_None ? level : n, n == Py_None ? st->level_off[L_TAIL] : st->order_off[O_PREV],
            p);
    set_ref(o, st->order_off[O_PREV], Py_None);
    set_ref(o, st->order_off[O_NEXT], Py_None);
}

static inline int
lv_empty(cstate *st, PyObject *level)
{
    return lnk(level, st->level_off[L_HEAD]) == Py_None;
}

static int
book_rest(cstate *st, PyObject *book, PyObject *o, PyObject *side, PyObject *price, long long pv,
          long long leaves, PyObject *oid, PyObject **lq_out)
{
    /* OrderBook.add(o) without the L2 change (the caller records it); *lq_out: the level's
     * new quantity */
    int buy = side == st->K[S_BUY] || is_str_noerr(side, st->K[S_BUY]);
    PyObject *side_map = SLOT(book, st->book_off[buy ? B_BIDS : B_ASKS]);
    long long kv = buy ? -pv : pv;
    PyObject *k = side_key(price, pv, buy);
    if (k == NULL)
        return -1;
    PyObject *level = PyDict_GetItemWithError(side_map, k);
    if (level == NULL) {
        if (PyErr_Occurred())
            goto fail;
        level = PyObject_CallNoArgs((PyObject *)st->types[K_LEVEL]);
        if (level == NULL)
            goto fail;
        set_ref(level, st->level_off[L_QTY], st->zero);
        set_ref(level, st->level_off[L_HEAD], Py_None);
        set_ref(level, st->level_off[L_TAIL], Py_None);
        int e = open_level(st, side_map, k, kv, level);
        Py_DECREF(level); /* the side map holds it */
        if (e < 0)
            goto fail;
    }
    Py_DECREF(k);
    lv_append(st, level, o);
    if (slot_add(level, st->level_off[L_QTY], leaves) < 0) /* any size: see match */
        return -1;
    if (PyDict_SetItem(SLOT(book, st->book_off[B_ORDERS]), oid, o) < 0)
        return -1;
    *lq_out = Py_NewRef(SLOT(level, st->level_off[L_QTY]));
    return 0;
fail:
    Py_DECREF(k);
    return -1;
}

static PyObject *
unrest(cstate *st, PyObject *book, PyObject *o, PyObject *okey, PyObject *side_map, PyObject *k,
       long long kv, PyObject *level, long long leaves)
{
    /* OrderBook.remove's steps on the book, without the L2 change (the caller records it):
     * the order (o, its id okey; the caller holds both) leaves the book's index and its
     * level, the level's quantity drops by its leaves and an emptied level leaves the side.
     * The level's new quantity (a new reference), or NULL with an error (KeyError for a
     * missing entry, as in Python). */
    if (PyDict_DelItem(SLOT(book, st->book_off[B_ORDERS]), okey) < 0)
        return NULL;
    lv_unlink(st, level, o);
    if (slot_add(level, st->level_off[L_QTY], -leaves) < 0)
        return NULL;
    PyObject *lq = Py_NewRef(SLOT(level, st->level_off[L_QTY]));
    if (lv_empty(st, level) && del_level(st, side_map, k, kv) < 0) {
        Py_DECREF(lq);
        return NULL;
    }
    return lq;
}

/* ------------------------------------------------------------------ the CorePath object */

typedef struct {
    PyObject_HEAD
    cstate *st;   /* the module's state, found once when the object is made */
    PyObject *ex; /* the Exchange */
} CorePath;

static PyObject *
find(PyObject *dict, PyObject *key)
{
    /* dict.get(key) for instruments[symbol] and _rules[segment], borrowed; NULL (error set
     * or not) when absent */
    return PyDict_GetItemWithError(dict, key);
}

static PyObject *
find_book(PyObject *books, PyObject *symbol, PyObject *segment)
{
    /* books.get((symbol, segment)), borrowed; NULL (error set or not) when absent */
    PyObject *key = PyTuple_Pack(2, symbol, segment);
    if (key == NULL)
        return NULL;
    PyObject *book = PyDict_GetItemWithError(books, key);
    Py_DECREF(key);
    return book;
}

static PyObject *call_method(CorePath *self, int name, PyObject *a, PyObject *b, PyObject *c)
{
    cstate *st = self->st;
    /* ex.<name>(a[, b[, c]]) */
    return PyObject_CallMethodObjArgs(self->ex, st->N[name], a, b, c, NULL);
}

static inline PyObject *
xget(CorePath *self, int name)
{
    cstate *st = self->st;
    /* the Exchange's attribute (a slot), borrowed; NULL with an error when unset */
    PyObject *v = SLOT(self->ex, st->ex_off[name]);
    if (v == NULL)
        PyErr_Format(PyExc_AttributeError, "Exchange.%s is not set", ex_names[name]);
    return v;
}

static inline void
xset(CorePath *self, int name, PyObject *v)
{
    cstate *st = self->st;
    /* store v (a new reference, stolen) */
    set_slot(self->ex, st->ex_off[name], v);
}

/* a fill found by the matcher */
typedef struct {
    PyObject *maker; /* a reference */
    long long q, px;
} fill_t;

typedef struct {
    fill_t *v;
    Py_ssize_t n, cap;
} fills_t;

static int
fills_push(fills_t *f, PyObject *maker, long long q, long long px)
{
    if (f->n == f->cap) {
        Py_ssize_t cap = f->cap ? f->cap * 2 : 16;
        fill_t *v = PyMem_Realloc(f->v, cap * sizeof(fill_t));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        f->v = v;
        f->cap = cap;
    }
    Py_INCREF(maker);
    f->v[f->n++] = (fill_t){maker, q, px};
    return 0;
}

static void
fills_free(fills_t *f)
{
    for (Py_ssize_t i = 0; i < f->n; i++)
        Py_DECREF(f->v[i].maker);
    PyMem_Free(f->v);
}

static int
match(cstate *st, PyObject *book, PyObject *o, int taker_buys, int has_limit, long long limit,
      long long remaining, PyObject *account, PyObject *stp, fills_t *fills,
      PyObject *stp_cancels, int *killed)
{
    /* OrderBook.match(o, limit, stp, fills, stp_cancels), step for step. -2: not taken (a
     * book price beyond 64 bits where it would trade) and nothing changed. A maker's leaves
     * and the level's quantity may be ints of any size (orders the Python path let in);
     * remaining, each fill and every price here fit in 64 bits. */
    PyObject *opp = SLOT(book, st->book_off[taker_buys ? B_ASKS : B_BIDS]);
    long long klimit = !has_limit ? LLONG_MAX : taker_buys ? limit : -limit;
    long long sign = taker_buys ? 1 : -1;
    PyObject *opp_side = st->K[taker_buys ? S_SELL : S_BUY];
    PyObject *orders = SLOT(book, st->book_off[B_ORDERS]);
    PyObject *changes = SLOT(book, st->book_off[B_CHANGES]);
    int incoming = is_str_noerr(stp, st->K[S_STP_INCOMING]);
    int both = is_str_noerr(stp, st->K[S_STP_BOTH]);
    int touched = 0;
    *killed = 0;
    while (remaining) {
        PyObject *k;
        int r = best_key(st, opp, &k);
        if (r <= 0) {
            if (r < 0)
                return -1;
            break;
        }
        long long kv;
        if (rd64(k, &kv) < 0 || kv == LLONG_MIN) {
            int beyond = PyLong_CheckExact(k) && long_sign(k) > 0; /* a key above int64 */
            if (beyond && has_limit)
                break; /* above any limit */
            if (!touched)
                return -2;
            PyErr_SetString(PyExc_OverflowError, "CorePath: book price beyond 64 bits");
            return -1;
        }
        if (kv > klimit)
            break;
        touched = 1;
        Py_INCREF(k);
        PyObject *level = PyDict_GetItemWithError(opp, k);
        if (level == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, k);
            Py_DECREF(k);
            return -1;
        }
        Py_INCREF(level);
        long long px = kv * sign;
        PyObject *price = PyLong_FromLongLong(px);
        if (price == NULL)
            goto fail;
        for (;;) {
            PyObject *maker = lnk(level, st->level_off[L_HEAD]);
            if (maker == Py_None) {
                PyErr_SetString(PyExc_KeyError, "CorePath: empty level in the book");
                goto fail;
            }
            Py_INCREF(maker);
            PyObject *mlo = SLOT(maker, st->order_off[O_LEAVES]);
            long long ml = 0;
            int ml_big = 0;
            if (Py_TYPE(maker) != st->types[K_ORDER] || mlo == NULL || !PyLong_CheckExact(mlo)) {
                PyErr_SetString(PyExc_TypeError, "CorePath: unexpected order in the book");
                goto fail_m;
            }
            if (rd64(mlo, &ml) < 0)
                ml_big = 1; /* beyond int64: more than remaining */
            int same = PyObject_RichCompareBool(SLOT(maker, st->order_off[O_ACCOUNT]), account,
                                                Py_EQ);
            if (same < 0)
                goto fail_m;
            if (same) {
                if (incoming) {
                    *killed = 1;
                    Py_DECREF(maker);
                    break;
                }
                lv_unlink(st, level, maker);
                if (slot_sub(level, st->level_off[L_QTY], mlo) < 0)
                    goto fail_m;
                if (PyDict_DelItem(orders, SLOT(maker, st->order_off[O_ID])) < 0 ||
                    PyList_Append(stp_cancels, maker) < 0)
                    goto fail_m;
                if (both)
                    *killed = 1;
            }
            else {
                long long q;
                if (!ml_big && ml <= remaining) {
                    q = ml;
                    lv_unlink(st, level, maker);
                    if (PyDict_DelItem(orders, SLOT(maker, st->order_off[O_ID])) < 0)
                        goto fail_m;
                }
                else
                    q = remaining;
                if (slot_add(maker, st->order_off[O_LEAVES], -q) < 0 ||
                    slot_add(maker, st->order_off[O_CUM], q) < 0 ||
                    fills_push(fills, maker, q, px) < 0 ||
                    slot_add(level, st->level_off[L_QTY], -q) < 0)
                    goto fail_m;
                remaining -= q;
            }
            Py_DECREF(maker);
            if (lv_empty(st, level)) {
                if (del_level(st, opp, k, kv) < 0)
                    goto fail;
                break;
            }
            if (!remaining || *killed)
                break;
            continue;
        fail_m:
            Py_DECREF(maker);
            goto fail;
        }
        if (list_append_new(changes, change(opp_side, price,
                                            Py_XNewRef(SLOT(level, st->level_off[L_QTY])))) < 0)
            goto fail;
        Py_DECREF(price);
        Py_DECREF(level);
        Py_DECREF(k);
        if (*killed)
            break;
        continue;
    fail:
        Py_XDECREF(price);
        Py_DECREF(level);
        Py_DECREF(k);
        return -1;
    }
    return 0;
}

static PyObject *
get_account(cstate *st, PyObject *accounts, PyObject *firm)
{
    PyObject *a = PyDict_GetItemWithError(accounts, firm);
    if (a == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, firm);
        return NULL;
    }
    if (Py_TYPE(a) != st->types[K_ACCOUNT]) {
        PyErr_SetString(PyExc_TypeError, "CorePath: unexpected account object");
        return NULL;
    }
    return a;
}

static int
read_i(PyObject *o, Py_ssize_t off, __int128 *v)
{
    PyObject *x = SLOT(o, off);
    if (x == NULL) {
        PyErr_SetString(PyExc_AttributeError, "CorePath: slot not set");
        return -1;
    }
    return rd128(x, v);
}


static inline __int128
floordiv10k(__int128 m)
{
    return m >= 0 ? m / 10000 : -((-m + 9999) / 10000);
}

/* the per-command constants of the settlement loop and the day statistics it keeps */
typedef struct {
    CorePath *self;
    PyObject *o, *acct, *accounts, *book, *symbol, *segment, *taker_side, *now, *events;
    int taker_buys;
    long long fee_bps;
    /* day statistics as _execute keeps them in locals: the high and the low (references,
     * ints of any size), whether the day has traded, and this command's sums */
    PyObject *day_high, *day_low;
    int traded;
    long long trades, last_px;
    __int128 day_volume, day_notional;
} settle_t;

static int
order_done(cstate *st, PyObject *ord, PyObject *acct)
{
    /* the status after a fill; a filled order leaves its account's live orders */
    PyObject *lv = SLOT(ord, st->order_off[O_LEAVES]);
    int leaves = lv == NULL ? -1 : PyObject_IsTrue(lv);
    if (leaves < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "CorePath: leaves is not set");
        return -1;
    }
    if (leaves) {
        set_ref(ord, st->order_off[O_STATUS], st->K[S_ST_PARTIAL]);
        return 0;
    }
    set_ref(ord, st->order_off[O_STATUS], st->K[S_ST_FILLED]);
    if (PyDict_DelItem(SLOT(acct, st->acct_off[A_ORDERS]), SLOT(ord, st->order_off[O_ID])) < 0)
        return -1;
    PyObject *coid = SLOT(ord, st->order_off[O_COID]);
    if (coid != Py_None && PyDict_DelItem(SLOT(acct, st->acct_off[A_COIDS]), coid) < 0)
        return -1;
    return 0;
}

static int
int_cmp(long long a, PyObject *b)
{
    /* sign of a - b for an int b of any size */
    long long x;
    if (rd64(b, &x) == 0)
        return a < x ? -1 : a > x;
    return PyLong_Check(b) && long_sign(b) > 0 ? -1 : 1;
}

static int
release_big(cstate *st, PyObject *bo, PyObject *bacct, long long fee_bps)
{
    /* the buyer's reservation step of a fill with Python's ints: new = buy_reserve(price,
     * leaves, fee_bps) if leaves else 0; cash_reserved -= reserved - new; reserved = new */
    PyObject *n = NULL, *m = NULL, *fl = NULL, *new_res = NULL, *diff = NULL, *res2 = NULL;
    PyObject *fee = PyLong_FromLongLong(fee_bps), *tenk = PyLong_FromLong(10000);
    int r = -1, bl;
    if (fee == NULL || tenk == NULL ||
        (bl = PyObject_IsTrue(SLOT(bo, st->order_off[O_LEAVES]))) < 0)
        goto done;
    if (bl) {
        PyObject *neg;
        if ((n = PyNumber_Multiply(SLOT(bo, st->order_off[O_PRICE]),
                                   SLOT(bo, st->order_off[O_LEAVES])))
                == NULL || (neg = PyNumber_Negative(n)) == NULL)
            goto done;
        m = PyNumber_Multiply(neg, fee);
        Py_DECREF(neg);
        if (m == NULL || (fl = PyNumber_FloorDivide(m, tenk)) == NULL ||
            (new_res = PyNumber_Subtract(n, fl)) == NULL)
            goto done;
    }
    else
        new_res = Py_NewRef(st->zero);
    if ((diff = PyNumber_Subtract(SLOT(bo, st->order_off[O_RESERVED]), new_res)) == NULL ||
        (res2 = PyNumber_Subtract(SLOT(bacct, st->acct_off[A_CASH_RES]), diff)) == NULL)
        goto done;
    set_slot(bacct, st->acct_off[A_CASH_RES], res2);
    res2 = NULL;
    set_ref(bo, st->order_off[O_RESERVED], new_res);
    r = 0;
done:
    Py_XDECREF(fee);
    Py_XDECREF(tenk);
    Py_XDECREF(n);
    Py_XDECREF(m);
    Py_XDECREF(fl);
    Py_XDECREF(new_res);
    Py_XDECREF(diff);
    Py_XDECREF(res2);
    return r;
}

static int
settle_fill(settle_t *s, PyObject *maker, long long q, long long px)
{
    cstate *st = s->self->st;
    /* one iteration of _execute's fill loop */
    PyObject *o = s->o, *acct = s->acct;
    PyObject *feeo = NULL, *split = NULL, *qo = NULL, *pxo = NULL, *tid = NULL, *taken = NULL;
    PyObject *bo, *bacct, *so, *sacct;
    int r = -1;
    if (slot_add(o, st->order_off[O_LEAVES], -q) < 0 || slot_add(o, st->order_off[O_CUM], q) < 0)
        goto done;
    PyObject *macct = get_account(st, s->accounts, SLOT(maker, st->order_off[O_ACCOUNT]));
    if (macct == NULL)
        goto done;
    if (s->taker_buys) {
        bo = o, bacct = acct, so = maker, sacct = macct;
    }
    else {
        bo = maker, bacct = macct, so = o, sacct = acct;
    }
    __int128 notional = (__int128)px * q;
    __int128 fee = floordiv10k(notional * s->fee_bps); /* same rate both sides */
    /* buyer: pay notional + fee out of the order's reservation */
    long long bl, bres, bprice;
    if (rd64(SLOT(bo, st->order_off[O_LEAVES]), &bl) == 0 && bl >= 0 && bl < I31 &&
        rd64(SLOT(bo, st->order_off[O_RESERVED]), &bres) == 0 &&
        rd64(SLOT(bo, st->order_off[O_PRICE]), &bprice) == 0 && bprice > -I31 && bprice < I31) {
        __int128 new_res = 0;
        if (bl) {
            __int128 n = (__int128)bprice * bl;
            new_res = n - floordiv10k(-n * s->fee_bps); /* buy_reserve */
        }
        if (slot_add(bacct, st->acct_off[A_CASH_RES], -((__int128)bres - new_res)) < 0 ||
            set_i(bo, st->order_off[O_RESERVED], new_res) < 0)
            goto done;
    }
    else if (release_big(st, bo, bacct, s->fee_bps) < 0) /* an order the Python path let in */
        goto done;
    /* the postings of post_cash and the two fees, each account's net in one step (nothing
     * can look in between, so the balances end as the reference's sequence leaves them) */
    PyObject *exch = fee ? get_account(st, s->accounts, st->K[S_EXCHANGE_ACCOUNT]) : NULL;
    if ((fee && exch == NULL) || slot_add(bacct, st->acct_off[A_CASH], -(notional + fee)) < 0 ||
        slot_add(sacct, st->acct_off[A_CASH], notional - fee) < 0 ||
        (fee && slot_add(exch, st->acct_off[A_CASH], 2 * fee) < 0))
        goto done;
    /* seller: units out of the reservation, FIFO over lots */
    PyObject *sh = PyDict_GetItemWithError(SLOT(sacct, st->acct_off[A_HOLDINGS]), s->symbol);
    if (sh == NULL || Py_TYPE(sh) != st->types[K_HOLDING]) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, s->symbol);
        goto done;
    }
    if (slot_add(sh, st->hold_off[H_RESERVED], -q) < 0 ||
        slot_add(so, st->order_off[O_RESERVED], -q) < 0)
        goto done;
    PyObject *lots = SLOT(sh, st->hold_off[H_LOTS]);
    PyObject *lot_key = NULL, *lv;
    Py_ssize_t pos = 0;
    long long have = 0;
    int fast = 0;
    if (PyDict_CheckExact(lots) && PyDict_Next(lots, &pos, &lot_key, &lv) &&
        rd64(lv, &have) == 0 && have > q && PyUnicode_Check(lot_key)) {
        int sub = PyUnicode_Tailmatch(lot_key, st->K[S_LOT_SUB_QUOTA], 0, PY_SSIZE_T_MAX, -1);
        if (sub < 0)
            goto done;
        fast = !sub;
    }
    if ((qo = PyLong_FromLongLong(q)) == NULL || (split = PyTuple_New(0)) == NULL)
        goto done;
    if (fast) {
        /* take_units' fast path, as inlined in the reference: the oldest lot covers it */
        PyObject *left = PyLong_FromLongLong(have - q);
        if (left == NULL)
            goto done;
        Py_INCREF(lot_key);
        int e = slot_add(sh, st->hold_off[H_TOTAL], -q) < 0 ||
            PyDict_SetItem(lots, lot_key, left) < 0;
        Py_DECREF(lot_key);
        Py_DECREF(left);
        if (e)
            goto done;
    }
    else {
        taken = PyObject_CallFunctionObjArgs(st->K[S_TAKE_UNITS], sacct, s->symbol, qo, NULL);
        if (taken == NULL)
            goto done;
        Py_ssize_t nt = PySequence_Size(taken);
        if (nt < 0)
            goto done;
        int need = nt > 1;
        if (!need) {
            PyObject *t0 = PySequence_GetItem(taken, 0);
            PyObject *k0 = t0 ? PySequence_GetItem(t0, 0) : NULL;
            Py_XDECREF(t0);
            PyObject *sw = k0 ? PyObject_CallMethodOneArg(k0, st->N[N_STARTSWITH],
                                                           st->K[S_LOT_SUB_QUOTA]) : NULL;
            Py_XDECREF(k0);
            if (sw == NULL)
                goto done;
            need = PyObject_IsTrue(sw);
            Py_DECREF(sw);
            if (need < 0)
                goto done;
        }
        if (need) {
            PyObject *net = from128(notional - fee);
            if (net == NULL)
                goto done;
            Py_SETREF(split, PyObject_CallMethodObjArgs(s->self->ex, st->N[N_SPLIT], sacct, taken,
                                                       qo, net, NULL));
            Py_DECREF(net);
            if (split == NULL)
                goto done;
        }
    }
    /* put_units(bacct, symbol, q, LOT_PURCHASE), as inlined in the reference */
    PyObject *holdings = SLOT(bacct, st->acct_off[A_HOLDINGS]);
    PyObject *bh = PyDict_GetItemWithError(holdings, s->symbol);
    if (bh == NULL) {
        if (PyErr_Occurred())
            goto done;
        bh = PyObject_CallNoArgs((PyObject *)st->types[K_HOLDING]);
        if (bh == NULL)
            goto done;
        int e = PyDict_SetItem(holdings, s->symbol, bh);
        Py_DECREF(bh);
        if (e < 0)
            goto done;
    }
    if (Py_TYPE(bh) != st->types[K_HOLDING]) {
        PyErr_SetString(PyExc_TypeError, "CorePath: unexpected holding object");
        goto done;
    }
    if (slot_add(bh, st->hold_off[H_TOTAL], q) < 0)
        goto done;
    PyObject *blots = SLOT(bh, st->hold_off[H_LOTS]);
    PyObject *bq = PyDict_GetItemWithError(blots, st->K[S_LOT_PURCHASE]);
    if (bq == NULL && PyErr_Occurred())
        goto done;
    PyObject *nb = num_add(bq != NULL ? bq : st->zero, q);
    if (nb == NULL)
        goto done;
    int e = PyDict_SetItem(blots, st->K[S_LOT_PURCHASE], nb);
    Py_DECREF(nb);
    if (e < 0)
        goto done;
    /* order states and reports */
    PyObject *tido = xget(s->self, X_NEXT_TRADE_ID);
    long long tidv;
    if (tido == NULL || rd64(tido, &tidv) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "CorePath: next_trade_id is not an int");
        goto done;
    }
    tid = tido;
    Py_INCREF(tid);
    PyObject *next = PyLong_FromLongLong(tidv + 1);
    if (next == NULL)
        goto done;
    xset(s->self, X_NEXT_TRADE_ID, next);
    if (order_done(st, maker, macct) < 0 || order_done(st, o, acct) < 0)
        goto done;
    if ((feeo = from128(fee)) == NULL || (pxo = PyLong_FromLongLong(px)) == NULL)
        goto done;
    if (list_append_new(s->events, new_er(st, 
            SLOT(maker, st->order_off[O_ACCOUNT]), SLOT(maker, st->order_off[O_ID]),
            SLOT(maker, st->order_off[O_COID]), SLOT(maker, st->order_off[O_INSTRUMENT]),
            SLOT(maker, st->order_off[O_SEGMENT]), SLOT(maker, st->order_off[O_SIDE]),
            st->K[S_EXEC_TRADE], SLOT(maker, st->order_off[O_STATUS]),
            SLOT(maker, st->order_off[O_PRICE]),
            SLOT(maker, st->order_off[O_QTY]), qo, pxo, SLOT(maker, st->order_off[O_CUM]),
            SLOT(maker, st->order_off[O_LEAVES]), Py_None, tid, feeo, st->K[S_MAKER], s->now))
        < 0)
        goto done;
    if (list_append_new(s->events, new_er(st, 
            SLOT(o, st->order_off[O_ACCOUNT]), SLOT(o, st->order_off[O_ID]),
            SLOT(o, st->order_off[O_COID]),
            SLOT(o, st->order_off[O_INSTRUMENT]), s->segment, s->taker_side, st->K[S_EXEC_TRADE],
            SLOT(o, st->order_off[O_STATUS]), SLOT(o, st->order_off[O_PRICE]),
            SLOT(o, st->order_off[O_QTY]),
            qo, pxo, SLOT(o, st->order_off[O_CUM]), SLOT(o, st->order_off[O_LEAVES]), Py_None, tid,
            feeo, st->K[S_TAKER], s->now))
        < 0)
        goto done;
    PyObject *t = alloc(st, K_TRADE);
    if (t == NULL)
        goto done;
    PyObject *tv[T_N] = {tid, s->symbol, s->segment, pxo, qo, SLOT(bacct, st->acct_off[A_FIRM]),
                         SLOT(sacct, st->acct_off[A_FIRM]), SLOT(bo, st->order_off[O_ID]),
                         SLOT(so, st->order_off[O_ID]), s->taker_side, feeo, feeo, split, s->now};
    for (int i = 0; i < T_N; i++) {
        Py_INCREF(tv[i]);
        SLOT(t, st->trade_off[i]) = tv[i];
    }
    if (PyList_Append(s->events, t) < 0) {
        Py_DECREF(t);
        goto done;
    }
    Py_DECREF(t); /* the trade listeners see it once the command is applied (cp_apply) */
    /* day statistics */
    if (!s->traded) {
        set_ref(s->book, st->book_off[B_DAY_OPEN], pxo);
        Py_XSETREF(s->day_high, Py_NewRef(pxo));
        Py_XSETREF(s->day_low, Py_NewRef(pxo));
        s->traded = 1;
    }
    else if (int_cmp(px, s->day_high) > 0)
        Py_XSETREF(s->day_high, Py_NewRef(pxo));
    else if (int_cmp(px, s->day_low) < 0)
        Py_XSETREF(s->day_low, Py_NewRef(pxo));
    s->trades += 1;
    s->day_volume += q;
    s->day_notional += notional;
    s->last_px = px;
    r = 0;
done:
    Py_XDECREF(feeo);
    Py_XDECREF(split);
    Py_XDECREF(qo);
    Py_XDECREF(pxo);
    Py_XDECREF(tid);
    Py_XDECREF(taken);
    return r;
}

static int
cancel_in_python(CorePath *self, PyObject *o, PyObject *acct, PyObject *reason,
                 PyObject *events)
{
    cstate *st = self->st;
    /* an order stops working here (self-trade prevention, an IOC order's unfilled rest): as
     * the reference does it - status canceled, _release, _forget, and _er's report */
    set_ref(o, st->order_off[O_STATUS], st->K[S_ST_CANCELED]);
    PyObject *x = call_method(self, N_RELEASE, o, acct, NULL);
    if (x == NULL)
        return -1;
    Py_DECREF(x);
    if ((x = call_method(self, N_FORGET, o, acct, NULL)) == NULL)
        return -1;
    Py_DECREF(x);
    return list_append_new(events, call_method(self, N_ER, o, st->K[S_EXEC_CANCELED], reason));
}

static int
execute(CorePath *self, PyObject *o, PyObject *book, PyObject *instr, PyObject *rules,
        PyObject *acct, PyObject *events, int taker_buys, long long price, long long qty)
{
    cstate *st = self->st;
    /* Exchange._execute(o, book, instr, rules, acct, events), step for step */
    fills_t fills = {NULL, 0, 0};
    PyObject *stp_cancels = PyList_New(0);
    PyObject *accounts = xget(self, X_ACCOUNTS);
    settle_t s = {0};
    int killed, r = -1;
    if (stp_cancels == NULL || accounts == NULL)
        goto done;
    int m = match(st, book, o, taker_buys, 1, price, qty, SLOT(acct, st->acct_off[A_FIRM]),
                  SLOT(acct, st->acct_off[A_STP]), &fills, stp_cancels, &killed);
    if (m < 0) {
        if (m == -2) /* cp_place checked the best bid: cannot happen */
            PyErr_SetString(PyExc_SystemError, "CorePath: book price beyond 64 bits");
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(stp_cancels); i++) {
        PyObject *maker = PyList_GET_ITEM(stp_cancels, i);
        PyObject *macct = get_account(st, accounts, SLOT(maker, st->order_off[O_ACCOUNT]));
        if (macct == NULL ||
            cancel_in_python(self, maker, macct, st->K[S_SELF_TRADE_PREVENTED], events) < 0)
            goto done;
    }
    if (fills.n) {
        s.self = self;
        s.o = o;
        s.acct = acct;
        s.accounts = accounts;
        s.book = book;
        s.symbol = SLOT(instr, st->instr_off[I_SYMBOL]);
        s.segment = SLOT(o, st->order_off[O_SEGMENT]);
        s.taker_side = SLOT(o, st->order_off[O_SIDE]);
        s.events = events;
        s.taker_buys = taker_buys;
        if (rd64(SLOT(rules, st->rules_off[R_FEE_BPS]), &s.fee_bps) < 0) {
            PyErr_SetString(PyExc_TypeError, "CorePath: fee_bps is not an int");
            goto done;
        }
        if ((s.now = xget(self, X_NOW)) == NULL)
            goto done;
        Py_INCREF(s.now);
        s.traded = PyObject_IsTrue(SLOT(book, st->book_off[B_DAY_TRADES]));
        s.day_high = Py_XNewRef(SLOT(book, st->book_off[B_DAY_HIGH]));
        s.day_low = Py_XNewRef(SLOT(book, st->book_off[B_DAY_LOW]));
        int ok = s.traded >= 0 && s.day_high != NULL && s.day_low != NULL;
        for (Py_ssize_t i = 0; ok && i < fills.n; i++)
            ok = settle_fill(&s, fills.v[i].maker, fills.v[i].q, fills.v[i].px) == 0;
        if (ok) {
            set_ref(book, st->book_off[B_DAY_HIGH], s.day_high);
            set_ref(book, st->book_off[B_DAY_LOW], s.day_low);
            ok = set_i(book, st->book_off[B_LAST], s.last_px) == 0 &&
                 slot_add(book, st->book_off[B_DAY_TRADES], s.trades) == 0 &&
                 slot_add(book, st->book_off[B_DAY_VOLUME], s.day_volume) == 0 &&
                 slot_add(book, st->book_off[B_DAY_NOTIONAL], s.day_notional) == 0;
        }
        Py_XDECREF(s.day_high);
        Py_XDECREF(s.day_low);
        Py_DECREF(s.now);
        if (!ok)
            goto done;
    }
    if (killed) {
        long long leaves;
        if (rd64(SLOT(o, st->order_off[O_LEAVES]), &leaves) < 0) {
            PyErr_SetString(PyExc_TypeError, "CorePath: leaves is not an int");
            goto done;
        }
        if (leaves && cancel_in_python(self, o, acct, st->K[S_SELF_TRADE_PREVENTED], events) < 0)
            goto done;
    }
    r = 0;
done:
    fills_free(&fills);
    Py_XDECREF(stp_cancels);
    return r;
}

/* ------------------------------------------------------------------ place, cancel, apply */

static PyObject *
to_python(CorePath *self, int name, PyObject *cmd)
{
    cstate *st = self->st;
    /* hand cmd to the reference handler (nothing has changed yet) */
    if (PyErr_Occurred())
        PyErr_Clear();
    return PyObject_CallMethodOneArg(self->ex, st->N[name], cmd);
}

static inline int
exact_bool(PyObject *v)
{
    /* 1 True, 0 False, -1 anything else */
    return v == Py_True ? 1 : v == Py_False ? 0 : -1;
}

/* The checks place and amend share, as Exchange.check_qty, check_price, is_halted and the
 * reservation arithmetic do in Python. Each decides only "this path takes it" (1) or "hand
 * it over" (0); the reference then decides the reject. */

static int
trading(CorePath *self, PyObject *instr, PyObject *symbol, PyObject *segment)
{
    cstate *st = self->st;
    /* not is_halted(symbol, segment), read as exact bools and a set */
    PyObject *mh = xget(self, X_MARKET_HALTED), *hb = xget(self, X_HALTED_BOOKS);
    if (mh == NULL || hb == NULL || exact_bool(mh) != 0 ||
        exact_bool(SLOT(instr, st->instr_off[I_HALTED])) != 0 || !PyAnySet_CheckExact(hb))
        return 0;
    if (PySet_GET_SIZE(hb) == 0)
        return 1;
    PyObject *key = PyTuple_Pack(2, symbol, segment);
    int r = key != NULL && PySet_Contains(hb, key) == 0;
    Py_XDECREF(key);
    return r;
}

static int
qty_ok(cstate *st, PyObject *rules, long long qty)
{
    /* check_qty passes, and qty < 2**31 */
    long long lot, max_qty;
    return qty > 0 && qty < I31 && rd64(SLOT(rules, st->rules_off[R_LOT]), &lot) == 0 && lot > 0 &&
           qty % lot == 0 && rd64(SLOT(rules, st->rules_off[R_MAX_QTY]), &max_qty) == 0 &&
           qty <= max_qty;
}

static int
price_ok(cstate *st, PyObject *rules, PyObject *instr, long long price)
{
    /* check_price passes (the cached band edges are (1, 2**62) without a reference price),
     * and price < 2**31 */
    long long tick, lo, hi;
    return price > 0 && price < I31 && rd64(SLOT(rules, st->rules_off[R_TICK]), &tick) == 0 &&
           tick > 0 && price % tick == 0 &&
           rd64(SLOT(instr, st->instr_off[I_BAND_LO]), &lo) == 0 &&
           rd64(SLOT(instr, st->instr_off[I_BAND_HI]), &hi) == 0 && price >= lo && price <= hi;
}

static int
covered(cstate *st, PyObject *acct, PyObject *rules, PyObject *symbol, int buy, long long price,
        long long leaves, long long held, __int128 *new_res, PyObject **h)
{
    /* the reservation leaves at price need (buy: buy_reserve, price x leaves + ceil(fee);
     * sell: the units), in *new_res, and whether the account covers what it adds to the
     * held reservation; *h: the seller's holding */
    *h = NULL;
    if (buy) {
        long long fee_bps, cash, cash_res;
        if (rd64(SLOT(rules, st->rules_off[R_FEE_BPS]), &fee_bps) < 0 || fee_bps < 0 ||
            fee_bps > 10000 || rd64(SLOT(acct, st->acct_off[A_CASH]), &cash) < 0 ||
            rd64(SLOT(acct, st->acct_off[A_CASH_RES]), &cash_res) < 0)
            return 0;
        __int128 n = (__int128)price * leaves;
        *new_res = n - floordiv10k(-n * fee_bps);
        return *new_res - held <= (__int128)cash - cash_res;
    }
    long long total, reserved;
    PyObject *hd = PyDict_GetItemWithError(SLOT(acct, st->acct_off[A_HOLDINGS]), symbol);
    if (hd == NULL || Py_TYPE(hd) != st->types[K_HOLDING] ||
        rd64(SLOT(hd, st->hold_off[H_TOTAL]), &total) < 0 ||
        rd64(SLOT(hd, st->hold_off[H_RESERVED]), &reserved) < 0)
        return 0;
    *h = hd;
    *new_res = leaves;
    return (__int128)leaves - held <= (__int128)total - reserved;
}

static int
crossing(cstate *st, PyObject *book, PyObject *acct, int buy, long long price, int *crosses)
{
    /* book.crosses(side, price) in *crosses; 0 when a best price of 2**31 or more (a sell's
     * fills are at bid prices: below 2**31 every product stays exact) or, for an order that
     * crosses, a self-trade policy this path does not know */
    PyObject *opp = SLOT(book, st->book_off[buy ? B_ASKS : B_BIDS]), *bk;
    long long bkv = 0;
    int any = opp && PyDict_Check(opp) ? best_key(st, opp, &bk) : -1;
    if (any < 0 || (any && (rd64(bk, &bkv) < 0 || bkv <= -I31 || bkv >= I31)))
        return 0;
    *crosses = any && (buy ? bkv <= price : -bkv >= price);
    PyObject *stp = SLOT(acct, st->acct_off[A_STP]);
    return !*crosses || is_str(stp, st->K[S_STP_RESTING]) || is_str(stp, st->K[S_STP_INCOMING]) ||
           is_str(stp, st->K[S_STP_BOTH]);
}

static int
fields(cstate *st, PyObject *cmd, int k, PyObject **f)
{
    /* cmd (a class K_*) read into f, its fields in the class's order; 0 when one is unset
     * (the reference raises AttributeError) or cmd is not exactly that class */
    if (!st->configured || Py_TYPE(cmd) != st->types[k])
        return 0;
    for (int i = 0; i < classes[k].n; i++)
        if ((f[i] = SLOT(cmd, st->offs[k][i])) == NULL)
            return 0;
    return 1;
}

static PyObject *
firm(CorePath *self, PyObject *firm_id)
{
    cstate *st = self->st;
    /* Exchange.firm(firm_id): an Account that is not a system account (borrowed), or NULL */
    PyObject *accounts = xget(self, X_ACCOUNTS);
    PyObject *acct = accounts ? PyDict_GetItemWithError(accounts, firm_id) : NULL;
    return acct && Py_TYPE(acct) == st->types[K_ACCOUNT] &&
        SLOT(acct, st->acct_off[A_SYSTEM]) == Py_False
               ? acct : NULL;
}

static PyObject *
live_order(cstate *st, PyObject *acct, PyObject *order_id, PyObject *coid, PyObject **oid,
           int *absent)
{
    /* _find_order: the account's live Order by id, or by client order id when the id is
     * None (borrowed; *oid the id it was found by); NULL (maybe an error set) otherwise,
     * with *absent (when given) 1 if it is certain that no live order has that id: the
     * account's dicts are plain and hold no entry for it (or the client order id names
     * none), as _cancel's lookups would find */
    PyObject *coids = SLOT(acct, st->acct_off[A_COIDS]),
        *orders = SLOT(acct, st->acct_off[A_ORDERS]);
    if (absent != NULL)
        *absent = 0;
    if (!PyDict_CheckExact(coids) || !PyDict_CheckExact(orders))
        return NULL;
    int keyed = 1; /* the key is of a type whose lookup cannot surprise */
    if (order_id == Py_None && coid != Py_None) {
        keyed = PyUnicode_CheckExact(coid);
        order_id = PyDict_GetItemWithError(coids, coid);
    }
    else
        keyed = order_id == Py_None || PyLong_CheckExact(order_id);
    PyObject *o = order_id && order_id != Py_None ? PyDict_GetItemWithError(orders, order_id)
                                                  : NULL;
    if (o == NULL) {
        if (absent != NULL && keyed && !PyErr_Occurred() &&
            (order_id == NULL || order_id == Py_None || PyLong_CheckExact(order_id)))
            *absent = 1;
        return NULL;
    }
    if (Py_TYPE(o) != st->types[K_ORDER])
        return NULL;
    *oid = order_id;
    return o;
}

static PyObject *
reject_events(cstate *st, PyObject *command, PyObject *code, PyObject *message)
{
    /* _rejected's [CommandRejected(command, code, message)] */
    PyObject *r = alloc(st, K_REJECTED);
    if (r == NULL)
        return NULL;
    set_ref(r, st->rej_off[J_COMMAND], command);
    set_ref(r, st->rej_off[J_CODE], code);
    set_ref(r, st->rej_off[J_MESSAGE], message);
    PyObject *events = PyList_New(1);
    if (events == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    PyList_SET_ITEM(events, 0, r);
    return events;
}

static int
rest_left(CorePath *self, PyObject *o, PyObject *book, PyObject *acct, PyObject *side,
          PyObject *price, long long pv, PyObject *oid, int ioc, PyObject *events,
          PyObject **last)
{
    cstate *st = self->st;
    /* after matching (_place's and _amend's tails): what is left of o rests, unless o was
     * cancelled - an IOC order's rest is cancelled instead. *last: the rest's L2 change (a
     * new reference), or NULL. */
    long long leaves;
    *last = NULL;
    if (rd64(SLOT(o, st->order_off[O_LEAVES]), &leaves) < 0) {
        PyErr_SetString(PyExc_TypeError, "CorePath: leaves is not an int");
        return -1;
    }
    if (!leaves || SLOT(o, st->order_off[O_STATUS]) == st->K[S_ST_CANCELED])
        return 0;
    if (ioc) /* the unfilled rest of an IOC order is cancelled */
        return cancel_in_python(self, o, acct, st->K[S_UNFILLED_IOC], events);
    PyObject *lq;
    if (book_rest(st, book, o, side, price, pv, leaves, oid, &lq) < 0 ||
        (*last = change(side, price, lq)) == NULL)
        return -1;
    return 0;
}

static PyObject *
cp_place(CorePath *self, PyObject *cmd)
{
    cstate *st = self->st;
    PyObject *f[P_N], *acct;
    /* the checks of Exchange._place, in its order; any doubt hands the command over */
    if (!fields(st, cmd, K_PLACE, f) || (acct = firm(self, f[P_ACCOUNT])) == NULL ||
        SLOT(acct, st->acct_off[A_CAN_TRADE]) != Py_True)
        goto python;
    PyObject *symbol = f[P_INSTRUMENT], *segment = f[P_SEGMENT];
    PyObject *instruments = xget(self, X_INSTRUMENTS);
    PyObject *instr = instruments && PyDict_Check(instruments)
                          ? find(instruments, symbol) : NULL;
    if (instr == NULL || Py_TYPE(instr) != st->types[K_INSTRUMENT])
        goto python;
    PyObject *books = xget(self, X_BOOKS);
    PyObject *book = books && PyDict_CheckExact(books) ? find_book(books, symbol, segment)
                                                       : NULL;
    if (book == NULL || Py_TYPE(book) != st->types[K_BOOK])
        goto python;
    PyObject *side = f[P_SIDE];
    int buy = is_str(side, st->K[S_BUY]);
    if (!buy && !is_str(side, st->K[S_SELL]))
        goto python;
    PyObject *tif = f[P_TIF];
    int ioc = is_str(tif, st->K[S_IOC]);
    if (!(ioc || is_str(tif, st->K[S_GTC]) || is_str(tif, st->K[S_DAY])) ||
        !is_str(f[P_TYPE], st->K[S_LIMIT]))
        goto python; /* FOK, market orders, unknown kinds */
    int post_only = exact_bool(f[P_POST_ONLY]);
    if (post_only < 0 || (post_only && ioc))
        goto python;
    if (!trading(self, instr, symbol, segment))
        goto python;
    PyObject *all_rules = xget(self, X_RULES);
    PyObject *rules = all_rules && PyDict_Check(all_rules)
                          ? find(all_rules, segment) : NULL;
    if (rules == NULL || Py_TYPE(rules) != st->types[K_RULES] ||
        !is_str(SLOT(rules, st->rules_off[R_ACCESS]), st->K[S_ACCESS_ALL]))
        goto python;
    long long qty, price;
    if (rd64(f[P_QTY], &qty) < 0 || !qty_ok(st, rules, qty) || rd64(f[P_PRICE], &price) < 0 ||
        !price_ok(st, rules, instr, price))
        goto python;
    PyObject *coid = f[P_COID];
    PyObject *coids = SLOT(acct, st->acct_off[A_COIDS]);
    if (coid != Py_None && (!PyDict_CheckExact(coids) || PyDict_Contains(coids, coid) != 0))
        goto python;
    __int128 need;
    PyObject *h;
    int crosses;
    if (!covered(st, acct, rules, symbol, buy, price, qty, 0, &need, &h) ||
        !crossing(st, book, acct, buy, price, &crosses) || (crosses && post_only))
        goto python;
    PyObject *oid = xget(self, X_NEXT_ORDER_ID);
    long long oidv;
    if (oid == NULL || rd64(oid, &oidv) < 0 || oidv >= LLONG_MAX)
        goto python;
    /* the envelope of the command being applied: apply put it on the exchange */
    PyObject *seq = xget(self, X_LAST_SEQ), *now = xget(self, X_NOW);
    if (seq == NULL || now == NULL)
        return NULL;

    /* ---- accepted: from here on an error is an error, as in the reference */
    Py_INCREF(oid);
    PyObject *o = NULL, *er = NULL, *events = NULL;
    PyObject *next = PyLong_FromLongLong(oidv + 1);
    if (next == NULL)
        goto fail;
    xset(self, X_NEXT_ORDER_ID, next);
    if ((o = alloc(st, K_ORDER)) == NULL)
        goto fail;
    PyObject *firm_id = SLOT(acct, st->acct_off[A_FIRM]);
    PyObject *ov[O_N] = {oid, firm_id, coid, symbol, segment, side, f[P_PRICE], f[P_QTY],
                         f[P_QTY], st->zero, tif, f[P_POST_ONLY], st->zero, st->K[S_ST_NEW],
                         seq, Py_None, Py_None};
    for (int i = 0; i < O_N; i++) {
        Py_INCREF(ov[i]);
        SLOT(o, st->order_off[i]) = ov[i];
    }
    if (buy) {
        if (set_i(o, st->order_off[O_RESERVED], need) < 0 ||
            slot_add(acct, st->acct_off[A_CASH_RES], need) < 0)
            goto fail;
    }
    else {
        set_ref(o, st->order_off[O_RESERVED], f[P_QTY]);
        if (slot_add(h, st->hold_off[H_RESERVED], qty) < 0)
            goto fail;
    }
    if (PyDict_SetItem(SLOT(acct, st->acct_off[A_ORDERS]), oid, o) < 0 ||
        (coid != Py_None && PyDict_SetItem(coids, coid, oid) < 0))
        goto fail;
    er = new_er(st, firm_id, oid, coid, symbol, segment, side, st->K[S_EXEC_NEW], st->K[S_ST_NEW],
                f[P_PRICE], f[P_QTY], st->zero, st->zero, st->zero, f[P_QTY], Py_None, st->zero,
                st->zero, Py_None, now);
    if (er == NULL || (events = PyList_New(crosses || ioc ? 1 : 2)) == NULL)
        goto fail;
    PyList_SET_ITEM(events, 0, er);
    er = NULL;
    PyObject *lq;
    if (!crosses && !ioc) {
        /* the usual case: nothing trades and the whole order rests */
        if (book_rest(st, book, o, side, f[P_PRICE], price, qty, oid, &lq) < 0 ||
            emit_book_update(st, self->ex, book, change(side, f[P_PRICE], lq), events) < 0)
            goto fail;
    }
    else {
        PyObject *last;
        if ((crosses && execute(self, o, book, instr, rules, acct, events, buy, price, qty) < 0)
            || rest_left(self, o, book, acct, side, f[P_PRICE], price, oid, ioc, events, &last)
            < 0 || emit_book_update(st, self->ex, book, last, events) < 0)
            goto fail;
    }
    Py_DECREF(o);
    Py_DECREF(oid);
    return events;
fail:
    Py_XDECREF(o);
    Py_XDECREF(er);
    Py_XDECREF(events);
    Py_DECREF(oid);
    return NULL;
python:
    return to_python(self, N_PLACE, cmd);
}

static PyObject *
cp_cancel(CorePath *self, PyObject *cmd)
{
    cstate *st = self->st;
    PyObject *k = NULL;
    PyObject *f[C_N], *acct;
    if (!fields(st, cmd, K_CANCEL, f) || (acct = firm(self, f[C_ACCOUNT])) == NULL)
        goto python; /* an unset field: the reference raises AttributeError */
    PyObject *oid;
    int absent;
    PyObject *o = live_order(st, acct, f[C_ORDER_ID], f[C_COID], &oid, &absent);
    if (o == NULL) {
        if (!absent)
            goto python;
        /* the reference's Reject(UNKNOWN_ORDER) in _cancel, as apply turns it into events */
        return reject_events(st, st->K[S_CANCEL_TYPE], st->K[S_UNKNOWN_ORDER],
                             st->K[S_NO_LIVE_ORDER]);
    }
    PyObject *coids = SLOT(acct, st->acct_off[A_COIDS]),
        *orders = SLOT(acct, st->acct_off[A_ORDERS]);
    PyObject *ocoid = SLOT(o, st->order_off[O_COID]);
    /* the order's own id object is the key in every dict that holds it (one identity
     * check per lookup instead of an int comparison) */
    PyObject *okey = SLOT(o, st->order_off[O_ID]);
    if (okey == NULL)
        goto python;
    PyObject *books = xget(self, X_BOOKS);
    PyObject *book = books && PyDict_CheckExact(books)
                         ? find_book(books, SLOT(o, st->order_off[O_INSTRUMENT]),
                                     SLOT(o, st->order_off[O_SEGMENT]))
                         : NULL;
    if (book == NULL || Py_TYPE(book) != st->types[K_BOOK] ||
        !PyDict_CheckExact(SLOT(book, st->book_off[B_ORDERS])))
        goto python;
    PyObject *side = SLOT(o, st->order_off[O_SIDE]);
    int buy = is_str(side, st->K[S_BUY]);
    if (!buy && !is_str(side, st->K[S_SELL]))
        goto python;
    long long price, leaves;
    if (rd64(SLOT(o, st->order_off[O_PRICE]), &price) < 0 || price <= -(1LL << 62) ||
        price >= (1LL << 62) || rd64(SLOT(o, st->order_off[O_LEAVES]), &leaves) < 0)
        goto python;
    PyObject *side_map = SLOT(book, st->book_off[buy ? B_BIDS : B_ASKS]);
    long long kv = buy ? -price : price;
    if (!PyDict_Check(side_map) ||
        (k = side_key(SLOT(o, st->order_off[O_PRICE]), price, buy)) == NULL)
        goto python;
    PyObject *level = PyDict_GetItemWithError(side_map, k);
    if (level == NULL || Py_TYPE(level) != st->types[K_LEVEL])
        goto python;
    PyObject *h = NULL;
    __int128 reserved;
    if (read_i(o, st->order_off[O_RESERVED], &reserved) < 0)
        goto python;
    if (!buy) {
        h = PyDict_GetItemWithError(SLOT(acct, st->acct_off[A_HOLDINGS]),
                                    SLOT(o, st->order_off[O_INSTRUMENT]));
        if (h == NULL || Py_TYPE(h) != st->types[K_HOLDING])
            goto python;
    }

    PyObject *now = xget(self, X_NOW); /* the applying command's time (apply set it) */
    if (now == NULL) {
        Py_DECREF(k);
        return NULL;
    }

    /* ---- accepted: as in the reference, an inconsistent book raises KeyError from here */
    PyObject *events = NULL, *er = NULL, *lq = NULL;
    Py_INCREF(o);
    Py_INCREF(oid);
    Py_INCREF(level);
    if (PyDict_DelItem(orders, okey) < 0 ||
        (ocoid != Py_None && PyDict_DelItem(coids, ocoid) < 0) ||
        (lq = unrest(st, book, o, okey, side_map, k, kv, level, leaves)) == NULL)
        goto fail;
    set_ref(o, st->order_off[O_STATUS], st->K[S_ST_CANCELED]);
    if (buy ? slot_add(acct, st->acct_off[A_CASH_RES], -reserved) < 0
            : slot_add(h, st->hold_off[H_RESERVED], -reserved) < 0)
        goto fail;
    set_ref(o, st->order_off[O_RESERVED], st->zero);
    er = new_er(st, SLOT(o, st->order_off[O_ACCOUNT]), oid, SLOT(o, st->order_off[O_COID]),
                SLOT(o, st->order_off[O_INSTRUMENT]), SLOT(o, st->order_off[O_SEGMENT]), side,
                st->K[S_EXEC_CANCELED], st->K[S_ST_CANCELED], SLOT(o, st->order_off[O_PRICE]),
                SLOT(o, st->order_off[O_QTY]), st->zero, st->zero, SLOT(o, st->order_off[O_CUM]),
                st->zero,
                st->K[S_CANCELED_BY_CLIENT], st->zero, st->zero, Py_None, now);
    if (er == NULL || (events = PyList_New(2)) == NULL)
        goto fail;
    PyList_SET_ITEM(events, 0, er);
    er = NULL;
    PyObject *ch = change(side, SLOT(o, st->order_off[O_PRICE]), lq);
    lq = NULL;
    if (emit_book_update(st, self->ex, book, ch, events) < 0)
        goto fail;
    Py_DECREF(o);
    Py_DECREF(oid);
    Py_DECREF(level);
    Py_DECREF(k);
    return events;
fail:
    Py_XDECREF(lq);
    Py_XDECREF(er);
    Py_XDECREF(events);
    Py_DECREF(o);
    Py_DECREF(oid);
    Py_DECREF(level);
    Py_DECREF(k);
    return NULL;
python:
    Py_XDECREF(k);
    return to_python(self, N_CANCEL, cmd);
}

static PyObject *
cp_amend(CorePath *self, PyObject *cmd)
{
    cstate *st = self->st;
    /* Exchange._amend, step for step: a quantity decrease at the same price keeps time
     * priority (book.reduce); anything else leaves the book and comes back through
     * _execute, as a new order would. */
    PyObject *k = NULL;
    PyObject *f[M_N], *acct;
    /* the checks of _amend, in its order; any doubt hands the command over */
    if (!fields(st, cmd, K_AMEND, f) || (acct = firm(self, f[M_ACCOUNT])) == NULL)
        goto python;
    PyObject *oid;
    PyObject *o = live_order(st, acct, f[M_ORDER_ID], f[M_COID], &oid, NULL);
    if (o == NULL || SLOT(acct, st->acct_off[A_CAN_TRADE]) != Py_True)
        goto python;
    PyObject *symbol = SLOT(o, st->order_off[O_INSTRUMENT]),
        *segment = SLOT(o, st->order_off[O_SEGMENT]);
    PyObject *instruments = xget(self, X_INSTRUMENTS), *all_rules = xget(self, X_RULES);
    PyObject *books = xget(self, X_BOOKS);
    PyObject *instr = instruments && symbol && PyDict_Check(instruments)
                          ? find(instruments, symbol) : NULL;
    PyObject *rules = all_rules && segment && PyDict_Check(all_rules)
                          ? find(all_rules, segment) : NULL;
    PyObject *book = instr && rules && books && PyDict_CheckExact(books)
                         ? find_book(books, symbol, segment) : NULL;
    if (book == NULL || Py_TYPE(book) != st->types[K_BOOK] ||
        Py_TYPE(instr) != st->types[K_INSTRUMENT] ||
        Py_TYPE(rules) != st->types[K_RULES])
        goto python;
    if (!trading(self, instr, symbol, segment))
        goto python;
    long long oqty, oprice, ocum, oleaves, ores, nqty, nprice;
    if (rd64(SLOT(o, st->order_off[O_QTY]), &oqty) < 0 ||
        rd64(SLOT(o, st->order_off[O_PRICE]), &oprice)
        < 0 || rd64(SLOT(o, st->order_off[O_CUM]), &ocum) < 0 ||
        rd64(SLOT(o, st->order_off[O_LEAVES]), &oleaves) < 0 ||
        rd64(SLOT(o, st->order_off[O_RESERVED]), &ores) < 0 || oprice <= 0 || oprice >= I31 ||
        oqty <= 0 || oqty >= I31)
        goto python;
    PyObject *qty_o = f[M_QTY] == Py_None ? SLOT(o, st->order_off[O_QTY]) : f[M_QTY];
    PyObject *price_o = f[M_PRICE] == Py_None ? SLOT(o, st->order_off[O_PRICE]) : f[M_PRICE];
    if (rd64(qty_o, &nqty) < 0 || rd64(price_o, &nprice) < 0 || (nqty == oqty && nprice == oprice))
        goto python; /* not an int of 64 bits, or no change (NO_CHANGE) */
    if (!qty_ok(st, rules, nqty) || nqty <= ocum ||
        (nprice != oprice && !price_ok(st, rules, instr, nprice)))
        goto python;
    long long new_leaves = nqty - ocum;
    PyObject *side = SLOT(o, st->order_off[O_SIDE]);
    int buy = side && is_str(side, st->K[S_BUY]);
    if (!buy && !(side && is_str(side, st->K[S_SELL])))
        goto python;
    __int128 new_res;
    PyObject *h;
    int crosses;
    int keeps = nprice == oprice && nqty < oqty; /* book.reduce: keeps time priority */
    int post_only = PyObject_IsTrue(SLOT(o, st->order_off[O_POST_ONLY]));
    if (!covered(st, acct, rules, symbol, buy, nprice, new_leaves, ores, &new_res, &h) ||
        post_only < 0 || !crossing(st, book, acct, buy, nprice, &crosses) ||
        (post_only && nprice != oprice && crosses)) /* POST_ONLY_WOULD_CROSS */
        goto python;
    __int128 extra = new_res - ores;
    PyObject *side_map = SLOT(book, st->book_off[buy ? B_BIDS : B_ASKS]);
    long long kv = buy ? -oprice : oprice;
    PyObject *level;
    if (!PyDict_Check(side_map) ||
        (k = side_key(SLOT(o, st->order_off[O_PRICE]), oprice, buy)) == NULL ||
        (level = PyDict_GetItemWithError(side_map, k)) == NULL ||
        Py_TYPE(level) != st->types[K_LEVEL]
        || !PyList_Check(SLOT(book, st->book_off[B_CHANGES])) ||
        !PyDict_CheckExact(SLOT(book, st->book_off[B_ORDERS])))
        goto python;

    /* ---- accepted */
    PyObject *events = NULL, *okey = SLOT(o, st->order_off[O_ID]);
    PyObject *changes = SLOT(book, st->book_off[B_CHANGES]);
    Py_INCREF(o);
    Py_INCREF(level);
    Py_INCREF(side);
    Py_INCREF(qty_o);
    Py_INCREF(price_o);
    PyObject *old_price = Py_NewRef(SLOT(o, st->order_off[O_PRICE]));
    Py_XINCREF(okey);
    if (okey == NULL || (buy ? slot_add(acct, st->acct_off[A_CASH_RES], extra)
                             : slot_add(h, st->hold_off[H_RESERVED], extra)) < 0 ||
        set_i(o, st->order_off[O_RESERVED], new_res) < 0 || (events = PyList_New(0)) == NULL)
        goto fail;
    PyObject *now = xget(self, X_NOW);
    if (now == NULL)
        goto fail;
    if (keeps) {
        if (slot_add(level, st->level_off[L_QTY], -((__int128)oleaves - new_leaves)) < 0 ||
            set_i(o, st->order_off[O_LEAVES], new_leaves) < 0 ||
            list_append_new(changes, change(side, old_price,
                                                Py_NewRef(SLOT(level, st->level_off[L_QTY])))) < 0)
            goto fail;
        set_ref(o, st->order_off[O_QTY], qty_o);
    }
    else {
        /* book.remove(o.order_id) */
        PyObject *lq = unrest(st, book, o, okey, side_map, k, kv, level, oleaves);
        if (lq == NULL || list_append_new(changes, change(side, old_price, lq)) < 0)
            goto fail;
        set_ref(o, st->order_off[O_QTY], qty_o);
        set_ref(o, st->order_off[O_PRICE], price_o);
        if (set_i(o, st->order_off[O_LEAVES], new_leaves) < 0)
            goto fail;
        PyObject *seq = xget(self, X_LAST_SEQ); /* the amend's own seq (apply set it) */
        if (seq == NULL)
            goto fail;
        set_ref(o, st->order_off[O_SEQ], seq);
    }
    if (list_append_new(events, new_er(st, 
            SLOT(o, st->order_off[O_ACCOUNT]), SLOT(o, st->order_off[O_ID]),
            SLOT(o, st->order_off[O_COID]),
            symbol, segment, side, st->K[S_EXEC_REPLACED], SLOT(o, st->order_off[O_STATUS]),
            SLOT(o, st->order_off[O_PRICE]), SLOT(o, st->order_off[O_QTY]), st->zero, st->zero,
            SLOT(o, st->order_off[O_CUM]), SLOT(o, st->order_off[O_LEAVES]), Py_None, st->zero,
            st->zero,
            Py_None, now)) < 0)
        goto fail;
    PyObject *last = NULL;
    if ((!keeps &&
         (execute(self, o, book, instr, rules, acct, events, buy, nprice, new_leaves) < 0 ||
          rest_left(self, o, book, acct, side, price_o, nprice, okey, 0, events, &last) < 0))
        || emit_book_update(st, self->ex, book, last, events) < 0)
        goto fail;
    Py_DECREF(o);
    Py_DECREF(level);
    Py_DECREF(side);
    Py_DECREF(qty_o);
    Py_DECREF(price_o);
    Py_DECREF(old_price);
    Py_DECREF(okey);
    Py_DECREF(k);
    return events;
fail:
    Py_XDECREF(events);
    Py_DECREF(o);
    Py_DECREF(level);
    Py_DECREF(side);
    Py_DECREF(qty_o);
    Py_DECREF(price_o);
    Py_DECREF(old_price);
    Py_XDECREF(okey);
    Py_DECREF(k);
    return NULL;
python:
    Py_XDECREF(k);
    return to_python(self, N_AMEND, cmd);
}

static PyObject *
cp_amend_m(PyObject *self, PyObject *cmd)
{
    return cp_amend((CorePath *)self, cmd);
}
static PyObject *
cp_place_m(PyObject *self, PyObject *cmd)
{
    return cp_place((CorePath *)self, cmd);
}

static PyObject *
cp_cancel_m(PyObject *self, PyObject *cmd)
{
    return cp_cancel((CorePath *)self, cmd);
}

static inline int
is_own(PyObject *h, CorePath *self, PyCFunction fn)
{
    return PyCFunction_Check(h) && PyCFunction_GET_SELF(h) == (PyObject *)self &&
           PyCFunction_GET_FUNCTION(h) == fn;
}

/* Exchange._notify_trades: the trade listeners, called once the command has been applied,
 * with its trades in the order they settled (the events list is the queue matching built). */
static int
notify_trades(CorePath *self, PyObject *events)
{
    cstate *st = self->st;
    PyObject *listeners = xget(self, X_TRADE_LISTENERS);
    if (listeners == NULL)
        return -1;
    if (!PyList_Check(listeners)) {
        PyErr_SetString(PyExc_TypeError, "CorePath: trade_listeners is not a list");
        return -1;
    }
    if (PyList_GET_SIZE(listeners) == 0 || !PyList_Check(events))
        return 0;
    int r = -1;
    Py_INCREF(listeners);
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(events); k++) {
        PyObject *t = PyList_GET_ITEM(events, k);
        if (Py_TYPE(t) != st->types[K_TRADE])
            continue;
        Py_INCREF(t);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(listeners); i++) {
            PyObject *fn = Py_NewRef(PyList_GET_ITEM(listeners, i));
            PyObject *res = PyObject_CallOneArg(fn, t);
            Py_DECREF(fn);
            if (res == NULL) {
                Py_DECREF(t);
                goto done;
            }
            Py_DECREF(res);
        }
        Py_DECREF(t);
    }
    r = 0;
done:
    Py_DECREF(listeners);
    return r;
}

static PyObject *
cp_apply(PyObject *self_, PyObject *cmd, PyObject *seq, PyObject *ts)
{
    cstate *st = ((CorePath *)self_)->st;
    /* Exchange.apply(cmd, seq, ts), step for step: the envelope goes onto the exchange
     * (last_seq, now), never onto the command */
    CorePath *self = (CorePath *)self_;
    PyTypeObject *tp = Py_TYPE(cmd);
    PyObject *res = NULL;
    PyObject *last = xget(self, X_LAST_SEQ);
    long long sv, lv;
    int le = last == NULL                                  ? -1
             : rd64(seq, &sv) == 0 && rd64(last, &lv) == 0 ? sv <= lv
             : PyObject_RichCompareBool(seq, last, Py_LE);
    if (le != 0) {
        if (le > 0)
            PyErr_Format(st->K[S_SEQUENCE_ERROR], "command seq %S after %S", seq, last);
        goto done;
    }
    xset(self, X_LAST_SEQ, Py_NewRef(seq));
    xset(self, X_NOW, Py_NewRef(ts));
    PyObject *handlers = xget(self, X_HANDLERS);
    if (handlers == NULL)
        goto done;
    PyObject *h = PyDict_GetItemWithError(handlers, (PyObject *)tp);
    if (h == NULL) {
        if (!PyErr_Occurred())
            res = PyObject_CallMethodOneArg(self->ex, st->N[N_UNKNOWN], cmd);
        goto done;
    }
    if (is_own(h, self, cp_place_m))
        res = cp_place(self, cmd);
    else if (is_own(h, self, cp_cancel_m))
        res = cp_cancel(self, cmd);
    else if (is_own(h, self, cp_amend_m))
        res = cp_amend(self, cmd);
    else {
        Py_INCREF(h);
        res = PyObject_CallOneArg(h, cmd);
        Py_DECREF(h);
    }
    if (res == NULL && PyErr_ExceptionMatches(st->K[S_REJECT])) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        res = PyObject_CallMethodObjArgs(self->ex, st->N[N_REJECTED], cmd, value, NULL);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    else if (res != NULL && notify_trades(self, res) < 0)
        Py_CLEAR(res);
done:
    return res;
}

static int
cp_init(CorePath *self, PyObject *args, PyObject *kw)
{
    cstate *st = self->st;
    PyObject *ex;
    if (!PyArg_ParseTuple(args, "O:CorePath", &ex))
        return -1;
    if (!st->configured) {
        PyErr_SetString(PyExc_RuntimeError, "CorePath: setup() has not had every class");
        return -1;
    }
    if (!PyObject_TypeCheck(ex, st->types[K_EXCHANGE])) {
        PyErr_SetString(PyExc_TypeError, "CorePath(ex): ex must be an Exchange");
        return -1;
    }
    Py_XSETREF(self->ex, Py_NewRef(ex));
    return 0;
}

static int
cp_traverse(CorePath *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self)); /* a heap type: its instances keep it alive */
    Py_VISIT(self->ex);
    return 0;
}

static int
cp_clear(CorePath *self)
{
    Py_CLEAR(self->ex);
    return 0;
}

static void
cp_dealloc(CorePath *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    cp_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
cp_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    /* the module's state is found once, here, and kept: every command reads it */
    PyObject *module = PyType_GetModuleByDef(type, &module_def);
    if (module == NULL)
        return NULL;
    CorePath *self = (CorePath *)PyType_GenericNew(type, args, kw);
    if (self != NULL)
        self->st = state_of(module);
    return (PyObject *)self;
}

static PyObject *cp_apply_m(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "apply(cmd, seq, ts) takes 3 positional arguments "
                     "(%zd given)", nargs);
        return NULL;
    }
    if (((CorePath *)self)->ex == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "CorePath: not initialised");
        return NULL;
    }
    return cp_apply(self, args[0], args[1], args[2]);
}

static PyMethodDef cp_methods[] = {
    {"apply", (PyCFunction)(void (*)(void))cp_apply_m, METH_FASTCALL,
     "apply(cmd, seq, ts) -> events: Exchange.apply."},
    {"place", (PyCFunction)cp_place_m, METH_O, "place(cmd) -> events: Exchange._place."},
    {"cancel", (PyCFunction)cp_cancel_m, METH_O, "cancel(cmd) -> events: Exchange._cancel."},
    {"amend", (PyCFunction)cp_amend_m, METH_O, "amend(cmd) -> events: Exchange._amend."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cp_slots[] = {
    {Py_tp_doc, "CorePath(exchange): the core's order path in C (Exchange.apply, _place and "
                "_cancel are the reference)."},
    {Py_tp_new, cp_new},
    {Py_tp_init, cp_init},
    {Py_tp_traverse, cp_traverse},
    {Py_tp_clear, cp_clear},
    {Py_tp_dealloc, cp_dealloc},
    {Py_tp_methods, cp_methods},
    {0, NULL},
};

static PyType_Spec cp_spec = {
    .name = "exchange.core._accel.CorePath",
    .basicsize = sizeof(CorePath),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = cp_slots,
};

/* ------------------------------------------------------------------ set-up */

static int
sc_layout(cstate *st)
{
    /* exchange.core._sc_layout: check() the installed sortedcontainers (an error naming its
     * version when the layout changed), then keep parts and the two __dict__ keys */
    PyObject *mod = PyImport_ImportModule("exchange.core._sc_layout");
    if (mod == NULL)
        return -1;
    PyObject *r = PyObject_CallMethod(mod, "check", NULL);
    Py_XDECREF(r);
    PyObject *parts = r ? PyObject_GetAttrString(mod, "parts") : NULL;
    PyObject *len = parts ? PyObject_GetAttrString(mod, "LEN") : NULL;
    PyObject *load = len ? PyObject_GetAttrString(mod, "LOAD") : NULL;
    Py_DECREF(mod);
    if (load == NULL || !PyCallable_Check(parts) || !PyUnicode_Check(len) ||
        !PyUnicode_Check(load)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "setup: exchange.core._sc_layout is not as expected");
        Py_XDECREF(parts);
        Py_XDECREF(len);
        Py_XDECREF(load);
        return -1;
    }
    Py_XSETREF(st->sc_layout, parts);
    Py_XSETREF(st->sc_len, len);
    Py_XSETREF(st->sc_load, load);
    return 0;
}


static PyObject *
setup(PyObject *mod, PyObject *cfg)
{
    cstate *st = state_of(mod);
    /* setup(cfg: dict): the core's classes and constants, by the names in class_keys and
     * const_keys; each call may give some of them (book.py gives the book's, exchange.py the
     * rest) */
    if (!PyDict_Check(cfg)) {
        PyErr_SetString(PyExc_TypeError, "setup(cfg): cfg must be a dict");
        return NULL;
    }
    for (int k = 0; k < K_N; k++) {
        PyObject *t = PyDict_GetItemString(cfg, class_keys[k]);
        if (t == NULL)
            continue;
        if (!PyType_Check(t))
            return PyErr_Format(PyExc_TypeError, "setup: %s is not a class", class_keys[k]);
        for (int i = 0; i < classes[k].n; i++) {
            PyObject *name = PyUnicode_InternFromString(classes[k].names[i]);
            if (name == NULL)
                return NULL;
            PyObject *dsc = type_lookup((PyTypeObject *)t, name);
            Py_DECREF(name);
            if (dsc == NULL || Py_TYPE(dsc) != &PyMemberDescr_Type ||
                ((PyMemberDescrObject *)dsc)->d_member->type != T_OBJECT_EX)
                return PyErr_Format(PyExc_TypeError, "setup: %s.%s is not a slot",
                                    class_keys[k], classes[k].names[i]);
            st->offs[k][i] = ((PyMemberDescrObject *)dsc)->d_member->offset;
        }
        Py_XSETREF(st->types[k], (PyTypeObject *)Py_NewRef(t));
        st->have_cls |= 1ull << k;
        if (k == K_BOOK && sc_layout(st) < 0)
            return NULL;
    }
    for (int i = 0; i < S_N; i++) {
        PyObject *v = PyDict_GetItemString(cfg, const_keys[i]);
        if (v == NULL)
            continue;
        Py_XSETREF(st->K[i], Py_NewRef(v));
        st->have_const |= 1ull << i;
    }
    st->configured = st->have_cls == (1ull << K_N) - 1 && st->have_const == (1ull << S_N) - 1;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ OrderBook methods */

/* OrderBook.add, remove, crosses and match (book.py), the same steps as there. Each takes
 * what it can and calls the Python method (book.PY_METHODS, the reference) for anything
 * else - a subclass, a value that is not an int64 - before changing anything. */


static int
book_ready(cstate *st, PyObject *book)
{
    return (st->have_cls & (1ull << K_BOOK | 1ull << K_ORDER | 1ull << K_LEVEL)) ==
               (1ull << K_BOOK | 1ull << K_ORDER | 1ull << K_LEVEL) &&
           st->K[S_BUY] && st->K[S_SELL] && st->K[S_STP_INCOMING] && st->K[S_STP_BOTH] &&
           Py_TYPE(book) == st->types[K_BOOK];
}

static PyObject *
py_book_call(cstate *st, int which, PyObject *book, PyObject *const *args, Py_ssize_t n)
{
    if (PyErr_Occurred())
        PyErr_Clear();
    PyObject *a[8];
    a[0] = book;
    for (Py_ssize_t i = 0; i < n && i < 7; i++)
        a[i + 1] = args[i];
    return PyObject_Vectorcall(st->py_book[which], a, n + 1, NULL);
}

static PyObject *
ob_add(cstate *st, PyObject *book, PyObject *order)
{
    long long price, leaves;
    PyObject *side, *oid;
    if (!book_ready(st, book) || Py_TYPE(order) != st->types[K_ORDER] ||
        (side = SLOT(order, st->order_off[O_SIDE])) == NULL ||
        (oid = SLOT(order, st->order_off[O_ID])) == NULL ||
        rd64(SLOT(order, st->order_off[O_PRICE]), &price) < 0 || price <= -(1LL << 62) ||
        price >= (1LL << 62) || rd64(SLOT(order, st->order_off[O_LEAVES]), &leaves) < 0 ||
        !(is_str(side, st->K[S_BUY]) || is_str(side, st->K[S_SELL])) ||
        !PyList_Check(SLOT(book, st->book_off[B_CHANGES])) ||
        !PyDict_CheckExact(SLOT(book, st->book_off[B_ORDERS])))
        return py_book_call(st, PB_ADD, book, &order, 1);
    PyObject *p = SLOT(order, st->order_off[O_PRICE]);
    Py_INCREF(p);
    Py_INCREF(side);
    PyObject *lqo;
    int e = book_rest(st, book, order, side, p, price, leaves, oid, &lqo) < 0 ||
            list_append_new(SLOT(book, st->book_off[B_CHANGES]), change(side, p, lqo)) < 0;
    Py_DECREF(p);
    Py_DECREF(side);
    if (e)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
ob_remove(cstate *st, PyObject *book, PyObject *order_id)
{
    PyObject *orders, *o = NULL, *side, *okey, *level = NULL, *k = NULL;
    long long price, leaves;
    int buy;
    if (!book_ready(st, book) || !PyDict_CheckExact(orders = SLOT(book, st->book_off[B_ORDERS])) ||
        !PyList_Check(SLOT(book, st->book_off[B_CHANGES])) ||
        (o = PyDict_GetItemWithError(orders, order_id)) == NULL ||
        Py_TYPE(o) != st->types[K_ORDER] ||
        (okey = SLOT(o, st->order_off[O_ID])) == NULL ||
        (side = SLOT(o, st->order_off[O_SIDE])) == NULL
        || rd64(SLOT(o, st->order_off[O_PRICE]), &price) < 0 || price <= -(1LL << 62) ||
        price >= (1LL << 62) || rd64(SLOT(o, st->order_off[O_LEAVES]), &leaves) < 0)
        return py_book_call(st, PB_REMOVE, book, &order_id, 1); /* KeyError for an unknown id */
    buy = is_str(side, st->K[S_BUY]);
    if (!buy && !is_str(side, st->K[S_SELL]))
        return py_book_call(st, PB_REMOVE, book, &order_id, 1);
    PyObject *side_map = SLOT(book, st->book_off[buy ? B_BIDS : B_ASKS]);
    long long kv = buy ? -price : price;
    if (!PyDict_Check(side_map) ||
        (k = side_key(SLOT(o, st->order_off[O_PRICE]), price, buy)) == NULL ||
        (level = PyDict_GetItemWithError(side_map, k)) == NULL ||
        Py_TYPE(level) != st->types[K_LEVEL]) {
        Py_XDECREF(k);
        return py_book_call(st, PB_REMOVE, book, &order_id, 1);
    }
    Py_INCREF(o);
    Py_INCREF(okey);
    Py_INCREF(level);
    PyObject *price_o = Py_NewRef(SLOT(o, st->order_off[O_PRICE]));
    Py_INCREF(side);
    PyObject *lq = unrest(st, book, o, okey, side_map, k, kv, level, leaves);
    int e = lq == NULL ||
            list_append_new(SLOT(book, st->book_off[B_CHANGES]), change(side, price_o, lq)) < 0;
    Py_DECREF(price_o);
    Py_DECREF(side);
    Py_DECREF(okey);
    Py_DECREF(level);
    Py_DECREF(k);
    if (e) {
        Py_DECREF(o);
        return NULL;
    }
    return o;
}

static PyObject *
ob_crosses(cstate *st, PyObject *book, PyObject *const *args, Py_ssize_t n)
{
    long long price = 0, kv;
    PyObject *key;
    if (n != 2 || !book_ready(st, book) || (args[1] != Py_None && rd64(args[1], &price) < 0))
        return py_book_call(st, PB_CROSSES, book, args, n);
    int buy = is_str(args[0], st->K[S_BUY]);
    PyObject *opp = SLOT(book, st->book_off[buy ? B_ASKS : B_BIDS]);
    if (!PyDict_Check(opp))
        return py_book_call(st, PB_CROSSES, book, args, n);
    int r = best_key(st, opp, &key);
    if (r < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_FALSE;
    if (args[1] == Py_None)
        Py_RETURN_TRUE;
    if (rd64(key, &kv) < 0 || kv == LLONG_MIN)
        return py_book_call(st, PB_CROSSES, book, args, n);
    return PyBool_FromLong(buy ? kv <= price : -kv >= price);
}

static PyObject *
ob_match(cstate *st, PyObject *book, PyObject *const *args, Py_ssize_t n)
{
    /* match(order, limit, stp, fills, stp_cancels) -> killed */
    long long limit = 0, leaves;
    PyObject *o, *side, *account;
    if (n != 5 || !book_ready(st, book) || Py_TYPE(o = args[0]) != st->types[K_ORDER] ||
        (args[1] != Py_None && (rd64(args[1], &limit) < 0 || limit <= -(1LL << 62) ||
                                limit >= (1LL << 62))) ||
        !PyUnicode_Check(args[2]) || !PyList_Check(args[3]) || !PyList_Check(args[4]) ||
        (side = SLOT(o, st->order_off[O_SIDE])) == NULL ||
        (account = SLOT(o, st->order_off[O_ACCOUNT])) == NULL ||
        rd64(SLOT(o, st->order_off[O_LEAVES]), &leaves) < 0 ||
        !PyDict_CheckExact(SLOT(book, st->book_off[B_ORDERS])) ||
        !PyList_Check(SLOT(book, st->book_off[B_CHANGES])) ||
        !PyDict_Check(SLOT(book, st->book_off[B_BIDS])) ||
        !PyDict_Check(SLOT(book, st->book_off[B_ASKS])))
        return py_book_call(st, PB_MATCH, book, args, n);
    int buy = is_str(side, st->K[S_BUY]); /* anything but "buy" matches as a sell, as in Python */
    fills_t fills = {NULL, 0, 0};
    int killed = 0;
    int r = match(st, book, o, buy, args[1] != Py_None, limit, leaves, account, args[2], &fills,
                  args[4], &killed);
    if (r < 0) {
        fills_free(&fills);
        return r == -2 ? py_book_call(st, PB_MATCH, book, args, n) : NULL;
    }
    for (Py_ssize_t i = 0; i < fills.n; i++) {
        PyObject *q = PyLong_FromLongLong(fills.v[i].q);
        PyObject *px = q ? PyLong_FromLongLong(fills.v[i].px) : NULL;
        PyObject *t = px ? PyTuple_Pack(3, fills.v[i].maker, q, px) : NULL;
        Py_XDECREF(q);
        Py_XDECREF(px);
        if (list_append_new(args[3], t) < 0) {
            fills_free(&fills);
            return NULL;
        }
    }
    fills_free(&fills);
    return PyBool_FromLong(killed);
}

/* The book methods are installed on OrderBook, a Python class, so a plain method descriptor
 * would reach them with the book as self and no way to the module's state. A BookMethod is
 * the descriptor instead: it holds the module (so the state lives as long as it does), binds
 * like a function (tp_descr_get) and is called through vectorcall with the book as the first
 * argument; Py_TPFLAGS_METHOD_DESCRIPTOR lets `book.add(o)` call it without making a bound
 * method first, as for a Python function. A call with keywords, or with a number of arguments
 * the C does not take, goes to the Python function, which answers it as the reference does. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *module;
    cstate *st;
    int which; /* PB_* */
    PyObject *name, *doc;
} BookMethod;

static const struct {
    const char *name, *doc;
    Py_ssize_t nargs; /* with the book */
} book_defs[PB_N] = {
    {"add", "Rest order at the back of its price level.", 2},
    {"remove", "Take a resting order out of the book (cancel/expire/replace). KeyError if "
               "absent.", 2},
    {"crosses", "Would an order on side at price (None = any price) trade immediately?", 3},
    {"match", "Match order against the opposite side (see book.OrderBook.match).", 6},
};

static PyObject *
bm_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    BookMethod *m = (BookMethod *)callable;
    cstate *st = m->st;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if ((kwnames != NULL && PyTuple_GET_SIZE(kwnames)) || n != book_defs[m->which].nargs ||
        st->py_book[m->which] == NULL)
        return PyObject_Vectorcall(st->py_book[m->which] ? st->py_book[m->which] : Py_None,
                                   args, nargsf, kwnames);
    switch (m->which) {
    case PB_ADD:
        return ob_add(st, args[0], args[1]);
    case PB_REMOVE:
        return ob_remove(st, args[0], args[1]);
    case PB_CROSSES:
        return ob_crosses(st, args[0], args + 1, n - 1);
    default:
        return ob_match(st, args[0], args + 1, n - 1);
    }
}

static PyObject *
bm_get(PyObject *self, PyObject *obj, PyObject *type)
{
    /* OrderBook.add: the descriptor itself; book.add: a method bound to the book */
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static int
bm_traverse(BookMethod *m, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(m));
    Py_VISIT(m->module);
    return 0;
}

static int
bm_clear(BookMethod *m)
{
    Py_CLEAR(m->module);
    return 0;
}

static void
bm_dealloc(BookMethod *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    PyObject_GC_UnTrack(m);
    bm_clear(m);
    Py_XDECREF(m->name);
    Py_XDECREF(m->doc);
    tp->tp_free((PyObject *)m);
    Py_DECREF(tp);
}

static PyObject *
bm_repr(BookMethod *m)
{
    return PyUnicode_FromFormat("<compiled method OrderBook.%U>", m->name);
}

static PyMemberDef bm_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(BookMethod, vectorcall), READONLY, NULL},
    {"__name__", T_OBJECT, offsetof(BookMethod, name), READONLY, NULL},
    {"__doc__", T_OBJECT, offsetof(BookMethod, doc), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* no Py_tp_doc: the instances' __doc__ member (each method's own) would be hidden by it */
static PyType_Slot bm_slots[] = {
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, bm_get},
    {Py_tp_traverse, bm_traverse},
    {Py_tp_clear, bm_clear},
    {Py_tp_dealloc, bm_dealloc},
    {Py_tp_repr, bm_repr},
    {Py_tp_members, bm_members},
    {0, NULL},
};

static PyType_Spec bm_spec = {
    .name = "exchange.core._accel.BookMethod",
    .basicsize = sizeof(BookMethod),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = bm_slots,
};

static PyObject *
book_methods(PyObject *mod, PyObject *py)
{
    /* book_methods(py: dict name -> the Python function) -> dict name -> a method descriptor
     * for OrderBook (after setup() was given OrderBook, Order, Level and the constants) */
    cstate *st = state_of(mod);
    if (!PyDict_Check(py) || !(st->have_cls & (1ull << K_BOOK))) {
        PyErr_SetString(PyExc_TypeError, "book_methods(py): setup() the book classes first");
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (int i = 0; i < PB_N; i++) {
        PyObject *f = PyDict_GetItemString(py, book_defs[i].name);
        if (f == NULL) {
            Py_DECREF(out);
            return PyErr_Format(PyExc_KeyError, "book_methods: %s missing", book_defs[i].name);
        }
        Py_XSETREF(st->py_book[i], Py_NewRef(f));
        BookMethod *m = PyObject_GC_New(BookMethod, st->bookmethod_type);
        if (m == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        m->vectorcall = bm_vectorcall;
        m->module = Py_NewRef(mod);
        m->st = st;
        m->which = i;
        m->name = PyUnicode_FromString(book_defs[i].name);
        m->doc = PyUnicode_FromString(book_defs[i].doc);
        PyObject_GC_Track(m);
        if (m->name == NULL || m->doc == NULL ||
            PyDict_SetItemString(out, book_defs[i].name, (PyObject *)m) < 0) {
            Py_DECREF(m);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(m);
    }
    return out;
}

static PyMethodDef corepath_functions[] = {
    {"setup", setup, METH_O,
     "setup(cfg) -> None: tell CorePath (some of) the core's classes and constants."},
    {"book_methods", book_methods, METH_O,
     "book_methods(py) -> {name: method descriptor}: OrderBook's add, remove, crosses and "
     "match in C (py: the Python functions, the reference and fallback)."},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ the module */

static int
module_exec(PyObject *m)
{
    cstate *st = state_of(m);
    Py_ssize_t *offs[K_N] = {st->acct_off, st->hold_off, st->instr_off, st->rules_off,
                             st->book_off, st->order_off, st->er_off, st->trade_off,
                             st->bu_off, st->place_off, st->cancel_off, st->level_off,
                             st->ex_off, st->amend_off, st->rej_off};
    memcpy(st->offs, offs, sizeof offs);
    for (int i = 0; i < N_N; i++)
        if ((st->N[i] = PyUnicode_InternFromString(name_strs[i])) == NULL)
            return -1;
    if ((st->zero = PyLong_FromLong(0)) == NULL)
        return -1;
    st->corepath_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &cp_spec, NULL);
    if (st->corepath_type == NULL || PyModule_AddType(m, st->corepath_type) < 0)
        return -1;
    st->bookmethod_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &bm_spec, NULL);
    return st->bookmethod_type == NULL ? -1 : 0;
}

/* traverse and clear: every object the state holds */
#define STATE_VISIT(X)                                                                         \
    do {                                                                                       \
        for (int k = 0; k < K_N; k++)                                                          \
            X(st->types[k]);                                                                   \
        for (int k = 0; k < S_N; k++)                                                          \
            X(st->K[k]);                                                                       \
        for (int k = 0; k < N_N; k++)                                                          \
            X(st->N[k]);                                                                       \
        for (int k = 0; k < PB_N; k++)                                                         \
            X(st->py_book[k]);                                                                 \
        for (int k = 0; k < SIDES; k++) {                                                      \
            X(st->sides[k].map);                                                               \
            X(st->sides[k].sl_dict);                                                           \
            X(st->sides[k].lists);                                                             \
            X(st->sides[k].maxes);                                                             \
            X(st->sides[k].index);                                                             \
        }                                                                                      \
        X(st->sc_layout);                                                                      \
        X(st->sc_len);                                                                         \
        X(st->sc_load);                                                                        \
        X(st->zero);                                                                           \
        X(st->corepath_type);                                                                  \
        X(st->bookmethod_type);                                                                \
    } while (0)

static int
module_traverse(PyObject *m, visitproc visit, void *arg)
{
    cstate *st = state_of(m);
    STATE_VISIT(Py_VISIT);
    return 0;
}

static int
module_clear(PyObject *m)
{
    cstate *st = state_of(m);
    st->configured = 0;
    st->have_cls = st->have_const = 0;
    STATE_VISIT(Py_CLEAR);
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
    .m_name = "exchange.core._accel",
    .m_doc = "The core's order path (CorePath) and OrderBook's add, remove, crosses and match "
             "in C.",
    .m_size = sizeof(cstate),
    .m_methods = corepath_functions,
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
