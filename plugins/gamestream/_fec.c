/* GameStream FEC: every Reed-Solomon block of a frame in one call, GIL released.
 *
 * A ~42 kB frame is one k=30 m=6 block whose parity ISA-L computes in a few
 * microseconds; calling ISA-L through ctypes and building its k + m pointer
 * arrays in numpy costs as much again, per block. This module takes the
 * whole frame (the shard matrix and the list of its blocks) and, with the GIL
 * released, builds the pointer arrays on the stack and calls the ISA-L
 * encoder once per block. It does no arithmetic of its own: the encoder
 * (an ``ec_encode_data`` variant) and its expanded tables come from fec.py,
 * which loaded the library, so the parity bytes are exactly those of the
 * ctypes path (tests/test_gamestream_fec.py checks that). Optional: when it
 * is not built, fec.py calls ISA-L through ctypes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* ISA-L: void ec_encode_data(int len, int k, int rows, unsigned char *gftbls,
 *                            unsigned char **data, unsigned char **coding) */
typedef void (*ec_encode_fn)(int, int, int, unsigned char *, unsigned char **, unsigned char **);

#define MAX_SHARDS 256
#define TABLE_BYTES_PER_COEF 32

typedef struct {
    Py_ssize_t row0;
    int k, m;
    Py_buffer tables;
} Block;

PyDoc_STRVAR(encode_doc,
"encode(fn, shards, blocks, lo=0, hi=-1)\n\n"
"Parity of every block: rows row0+k .. row0+k+m-1 of ``shards`` (a writable,\n"
"C-contiguous 2-D buffer of bytes) are computed from rows row0 .. row0+k-1,\n"
"over the columns lo .. hi (hi=-1: the whole row). ``blocks`` is a sequence\n"
"of (row0, k, m, tables); ``tables`` holds the expanded tables ``fn`` expects\n"
"(at least 32·k·m bytes). ``fn`` is the address of an ISA-L ec_encode_data\n"
"variant.");

static PyObject *fec_encode(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long fn_addr;
    PyObject *shards_obj, *blocks_obj;
    Py_ssize_t lo = 0, hi = -1;
    if (!PyArg_ParseTuple(args, "KOO|nn", &fn_addr, &shards_obj, &blocks_obj, &lo, &hi))
        return NULL;
    if (fn_addr == 0) {
        PyErr_SetString(PyExc_ValueError, "no encoder function");
        return NULL;
    }
    Py_buffer shards;
    if (PyObject_GetBuffer(shards_obj, &shards, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        /* read-only or strided: the caller's mistake, said as ValueError like the ctypes path */
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "shards must be a writable C-contiguous array");
        return NULL;
    }
    PyObject *seq = NULL;
    Block *blocks = NULL;
    Py_ssize_t nb = 0, held = 0;
    PyObject *result = NULL;
    if (shards.ndim != 2 || shards.itemsize != 1) {
        PyErr_SetString(PyExc_ValueError, "shards must be a 2-D array of bytes (rows × shard size)");
        goto done;
    }
    Py_ssize_t rows = shards.shape[0], width = shards.shape[1], stride = shards.strides[0];
    if (hi < 0)
        hi = width;
    if (lo < 0 || lo > hi || hi > width || hi - lo > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "column range %zd..%zd is outside 0..%zd", lo, hi, width);
        goto done;
    }
    seq = PySequence_Fast(blocks_obj, "blocks must be a sequence of (row0, k, m, tables)");
    if (seq == NULL)
        goto done;
    nb = PySequence_Fast_GET_SIZE(seq);
    blocks = PyMem_Calloc(nb ? (size_t)nb : 1, sizeof(Block));
    if (blocks == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < nb; held++) {
        Block *b = &blocks[held];
        PyObject *item = PySequence_Fast_GET_ITEM(seq, held);
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "niiy*", &b->row0, &b->k, &b->m, &b->tables)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "each block is a tuple (row0, k, m, tables)");
            goto done;
        }
        if (b->k < 1 || b->m < 1 || b->k + b->m > MAX_SHARDS || b->row0 < 0 || b->row0 > rows - b->k - b->m) {
            PyErr_Format(PyExc_ValueError, "block %zd (row %zd, k=%d, m=%d) does not fit %zd rows of at most %d shards",
                         held, b->row0, b->k, b->m, rows, MAX_SHARDS);
            held++;
            goto done;
        }
        if (b->tables.len < (Py_ssize_t)TABLE_BYTES_PER_COEF * b->k * b->m) {
            PyErr_Format(PyExc_ValueError, "block %zd: %zd bytes of tables, k=%d m=%d needs %d",
                         held, b->tables.len, b->k, b->m, TABLE_BYTES_PER_COEF * b->k * b->m);
            held++;
            goto done;
        }
    }
    ec_encode_fn fn = (ec_encode_fn)(uintptr_t)fn_addr;
    unsigned char *base = (unsigned char *)shards.buf + lo;
    int len = (int)(hi - lo);
    if (len > 0) {
        Py_BEGIN_ALLOW_THREADS
        unsigned char *ptrs[MAX_SHARDS];
        for (Py_ssize_t i = 0; i < nb; i++) {
            Block *b = &blocks[i];
            for (int r = 0; r < b->k + b->m; r++)
                ptrs[r] = base + (b->row0 + r) * stride;
            fn(len, b->k, b->m, (unsigned char *)b->tables.buf, ptrs, ptrs + b->k);
        }
        Py_END_ALLOW_THREADS
    }
    result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&blocks[i].tables);
    Py_XDECREF(seq);
    PyMem_Free(blocks);
    PyBuffer_Release(&shards);
    return result;
}

static PyMethodDef fec_methods[] = {
    {"encode", fec_encode, METH_VARARGS, encode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fec_module = {
    PyModuleDef_HEAD_INIT, "punktfunk_gamestream._fec",
    "Every FEC block of a GameStream frame through ISA-L in one call (see fec.py).", -1, fec_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fec(void) { return PyModule_Create(&fec_module); }
