/* exchange/_jsonw.h: writing the plain JSON values the extensions write themselves (ints,
 * ASCII strings that need no escape, null/true/false, prices in fen as "12.05"), each exactly
 * as orjson writes it, reading slots by offset, and comparing with a str constant. Shared by
 * the three accelerators (ADR 0013): exchange/journal/_accel.c (the journal record, the
 * snapshot's orders), exchange/server/_accel.c (the order requests' replies, the executions
 * push) and exchange/core/_accel.c. Only static inline functions and constants: nothing here
 * is state, so each extension module that includes it keeps its own (module state). Everything
 * else is left to orjson by the callers' fallbacks. */
#ifndef EXCHANGE_JSONW_H
#define EXCHANGE_JSONW_H

#include <Python.h>
#include <structmember.h>
#include <string.h>

static inline PyObject *
type_lookup(PyTypeObject *cls, PyObject *name)
{
    /* name as the class's MRO defines it, borrowed (a class dict holds it); NULL, with no
     * error set, when no class on the MRO has it: the MRO walk of attribute lookup,
     * without its cache: only setup-time code calls it. 3.12 hides the dicts of static
     * builtin types behind PyType_GetDict, which gives a new reference. */
    PyObject *mro = cls->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *b = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *dict = PyType_GetDict(b);
#else
        PyObject *dict = Py_XNewRef(b->tp_dict);
#endif
        if (dict == NULL)
            continue;
        PyObject *v = PyDict_GetItemWithError(dict, name);
        Py_DECREF(dict);
        if (v != NULL)
            return v;
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
    }
    return NULL;
}

static inline Py_ssize_t
slot_offset(PyTypeObject *cls, PyObject *name)
{
    /* the offset of cls's slot called name, or 0 when it is not a plain object slot */
    PyObject *d = type_lookup(cls, name); /* borrowed */
    if (d == NULL || Py_TYPE(d) != &PyMemberDescr_Type)
        return 0;
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX || (m->flags & READONLY))
        return 0;
    return m->offset;
}

static inline int
str_like(PyObject *v)
{
    /* a str, or an instance of a str subclass that keeps str's comparison (a StrEnum member:
     * the core's sides and statuses may be one): compared by its characters, as == does, and
     * written to JSON as its characters, as orjson does */
    if (PyUnicode_CheckExact(v))
        return 1;
    return PyUnicode_Check(v) && PyType_GetSlot(Py_TYPE(v), Py_tp_richcompare) ==
                                     PyType_GetSlot(&PyUnicode_Type, Py_tp_richcompare);
}

static inline int
is_str(PyObject *v, PyObject *k)
{
    /* v == k for the str constant k (v may be an equal str that is not the same object, or a
     * StrEnum member equal to it; k may be one too) */
    if (v == k)
        return 1;
    return str_like(v) && PyUnicode_GET_LENGTH(v) == PyUnicode_GET_LENGTH(k) &&
           PyUnicode_Compare(v, k) == 0;
}

static inline int
slot_offsets(PyTypeObject *cls, const char *const *names, int n, Py_ssize_t *off)
{
    /* off[k]: the offset of cls's slot names[k]; 1, or 0 when one is not a plain object slot,
     * -1 with an error */
    for (int k = 0; k < n; k++) {
        PyObject *name = PyUnicode_InternFromString(names[k]);
        if (name == NULL)
            return -1;
        off[k] = slot_offset(cls, name);
        Py_DECREF(name);
        if (off[k] == 0)
            return 0;
    }
    return 1;
}

static const char DIGITS2[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static inline int
int_len(long long v)
{
    /* the length of v's decimal form, its sign included */
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    int n = v < 0 ? 2 : 1;
    for (;;) {
        if (u < 10)
            return n;
        if (u < 100)
            return n + 1;
        if (u < 1000)
            return n + 2;
        if (u < 10000)
            return n + 3;
        u /= 10000;
        n += 4;
    }
}

static inline void
write_int(long long v, char *out, int len)
{
    /* v's decimal form into out[0:len] (len from int_len), two digits at a time */
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    char *p = out + len;
    if (v < 0)
        out[0] = '-';
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100u);
        u /= 100u;
        p -= 2;
        memcpy(p, DIGITS2 + 2 * r, 2);
    }
    if (u >= 10) {
        p -= 2;
        memcpy(p, DIGITS2 + 2 * u, 2);
    }
    else {
        *--p = (char)('0' + u);
    }
}

/* One value's kind, found in the first pass; the second pass writes it. */
enum { K_NULL, K_TRUE, K_FALSE, K_INT, K_STR };

typedef struct {
    int kind;
    long long i;
    const char *s;
    Py_ssize_t n;
} item;

static inline int
exact_int(PyObject *v, long long *out)
{
    /* an exact int within 64 bits signed */
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static inline int
classify(PyObject *v, item *it)
{
    /* 1: taken (it filled in, it->n is the bytes it will write); 0: not taken */
    if (v == Py_None) {
        it->kind = K_NULL;
        it->n = 4;
        return 1;
    }
    if (v == Py_True) {
        it->kind = K_TRUE;
        it->n = 4;
        return 1;
    }
    if (v == Py_False) {
        it->kind = K_FALSE;
        it->n = 5;
        return 1;
    }
    if (PyLong_CheckExact(v)) {
        if (!exact_int(v, &it->i))
            return 0;
        it->kind = K_INT;
        it->n = int_len(it->i);
        return 1;
    }
    if (str_like(v) && PyUnicode_IS_ASCII(v)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(v);
        const unsigned char *s = (const unsigned char *)PyUnicode_DATA(v);
        for (Py_ssize_t k = 0; k < n; k++) {
            unsigned char c = s[k];
            if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f)
                return 0;
        }
        it->kind = K_STR;
        it->s = (const char *)s;
        it->n = n + 2;
        return 1;
    }
    return 0;
}

static inline void
write_item(char *p, const item *it)
{
    switch (it->kind) {
    case K_NULL:
        memcpy(p, "null", 4);
        break;
    case K_TRUE:
        memcpy(p, "true", 4);
        break;
    case K_FALSE:
        memcpy(p, "false", 5);
        break;
    case K_INT:
        write_int(it->i, p, (int)it->n);
        break;
    default:
        p[0] = '"';
        memcpy(p + 1, it->s, it->n - 2);
        p[it->n - 1] = '"';
    }
}

static inline char *
write_px(char *p, long long fen)
{
    /* format_price(fen) in quotes: "-12.05" */
    unsigned long long u = fen < 0 ? 0ull - (unsigned long long)fen : (unsigned long long)fen;
    *p++ = '"';
    if (fen < 0)
        *p++ = '-';
    long long whole = (long long)(u / 100u);
    int n = int_len(whole);
    write_int(whole, p, n);
    p += n;
    *p++ = '.';
    memcpy(p, DIGITS2 + 2 * (u % 100u), 2);
    p += 2;
    *p++ = '"';
    return p;
}

#define PX_MAX 26 /* quotes, sign, 20 digits, point, 2 decimals */

/* Appending to a buffer through a char *p the caller holds (and sized beforehand): a string
 * literal, an int64's digits, a classified item. */
#define JW_LIT(s) (memcpy(p, s, sizeof(s) - 1), p += sizeof(s) - 1)
#define JW_INT(x) do { int n_ = int_len(x); write_int((x), p, n_); p += n_; } while (0)
#define JW_ITEM(it) (write_item(p, &(it)), p += (it).n)

/* A message is written into a scratch buffer sized by an upper bound and copied once into its
 * bytes object: the public API has no call that shrinks a bytes object (ADR 0013). Most
 * messages fit the buffer's own array, so the copy is the only cost. */
typedef struct {
    char *p;
    Py_ssize_t cap;
    char local[512];
} jw_buf;

static inline char *
jw_open(jw_buf *b, Py_ssize_t cap)
{
    /* where to write at most cap bytes; NULL with MemoryError */
    b->cap = cap;
    b->p = cap <= (Py_ssize_t)sizeof b->local ? b->local : PyMem_Malloc(cap);
    if (b->p == NULL)
        PyErr_NoMemory();
    return b->p;
}

static inline PyObject *
jw_close(jw_buf *b, const char *end)
{
    /* the bytes written, from the start to end, as a new bytes object; the buffer freed */
    if (end - b->p > b->cap)
        Py_FatalError("_jsonw: a message outgrew its buffer (the caller's bound)");
    PyObject *out = PyBytes_FromStringAndSize(b->p, end - b->p);
    if (b->p != b->local)
        PyMem_Free(b->p);
    return out;
}

#endif
