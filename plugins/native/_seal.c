/* punktfunk/1 batch sealer: one call writes every datagram of an access unit.
 *
 * The pure-Python packetizer pays about a microsecond of call overhead per
 * datagram in cryptography's AESGCM.encrypt (a fresh cipher context, a new
 * bytes object), which is most of the data plane's CPU time. This module
 * keeps one OpenSSL AES-GCM context per session and, for each shard, writes
 * the 32-byte header, the ciphertext and the 16-byte tag straight into the
 * caller's buffer, with the GIL released. The bytes are identical to the
 * Python path (tests/test_native_seal.py checks that); see
 * docs/protocol-native.md for the layout and docs/benchmarks.md for why this
 * exists. Optional: when it is not built, datapath.py uses cryptography.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

#define HDR 32
#define TAG 16

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx;
    uint32_t direction;
    int busy;
} Sealer;

static void put16(unsigned char *p, uint32_t v) { p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v; }
static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}
static void put64(unsigned char *p, uint64_t v) { put32(p, (uint32_t)(v >> 32)); put32(p + 4, (uint32_t)v); }

static int Sealer_init(Sealer *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"key", "direction", NULL};
    Py_buffer key;
    unsigned long direction;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*k", kwlist, &key, &direction))
        return -1;
    const EVP_CIPHER *cipher = key.len == 16 ? EVP_aes_128_gcm() : key.len == 32 ? EVP_aes_256_gcm() : NULL;
    if (cipher == NULL) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "key must be 16 or 32 bytes");
        return -1;
    }
    if (self->ctx == NULL)
        self->ctx = EVP_CIPHER_CTX_new();
    int ok = self->ctx != NULL
        && EVP_EncryptInit_ex(self->ctx, cipher, NULL, NULL, NULL) == 1
        && EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1
        && EVP_EncryptInit_ex(self->ctx, NULL, NULL, (const unsigned char *)key.buf, NULL) == 1;
    PyBuffer_Release(&key);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-GCM");
        return -1;
    }
    self->direction = (uint32_t)direction;
    return 0;
}

static void Sealer_dealloc(Sealer *self) {
    if (self->ctx != NULL)
        EVP_CIPHER_CTX_free(self->ctx);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* seal_frame(shards, seq, version, ptype, flags, frame_id, au_seq, au_len, k, m, slen) -> bytes */
static PyObject *Sealer_seal_frame(Sealer *self, PyObject *args) {
    PyObject *shards;
    unsigned long long seq;
    unsigned int version, ptype, flags;
    unsigned long frame_id, au_seq, au_len;
    unsigned int k, m, slen;
    if (!PyArg_ParseTuple(args, "OKIIIkkkIII", &shards, &seq, &version, &ptype, &flags,
                          &frame_id, &au_seq, &au_len, &k, &m, &slen))
        return NULL;
    PyObject *seqobj = PySequence_Fast(shards, "shards must be a sequence of buffers");
    if (seqobj == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seqobj);
    Py_ssize_t psize = HDR + (Py_ssize_t)slen + TAG;
    Py_buffer *bufs = NULL;
    Py_ssize_t got = 0;
    PyObject *result = NULL;
    unsigned char *out = NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Sealer is already sealing in another thread");
        goto done;
    }
    if (version > 255 || ptype > 255 || flags > 255 || k > 65535 || m > 65535 || slen > 65535 || slen == 0) {
        PyErr_SetString(PyExc_ValueError, "header field out of range");
        goto done;
    }
    bufs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
    if (bufs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seqobj, got), &bufs[got], PyBUF_SIMPLE) < 0)
            goto done;
        if (bufs[got].len != (Py_ssize_t)slen) {
            PyErr_Format(PyExc_ValueError, "shard %zd has %zd bytes, expected %u", got, bufs[got].len, slen);
            got++;
            goto done;
        }
    }
    /* uninitialised on purpose: every byte is written below */
    result = PyBytes_FromStringAndSize(NULL, n * psize);
    if (result == NULL)
        goto done;
    out = (unsigned char *)PyBytes_AS_STRING(result);
    int failed = 0;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    unsigned char nonce[12];
    put32(nonce, self->direction);
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        unsigned char *p = out + i * psize;
        uint64_t s = (uint64_t)seq + (uint64_t)i;
        p[0] = (unsigned char)version; p[1] = (unsigned char)ptype; p[2] = (unsigned char)flags; p[3] = 0;
        put64(p + 4, s);
        put32(p + 12, (uint32_t)frame_id);
        put32(p + 16, (uint32_t)au_seq);
        put32(p + 20, (uint32_t)au_len);
        put16(p + 24, (uint32_t)i);
        put16(p + 26, k);
        put16(p + 28, m);
        put16(p + 30, slen);
        put64(nonce + 4, s);
        int outl = 0;
        failed = EVP_EncryptInit_ex(self->ctx, NULL, NULL, NULL, nonce) != 1
            || EVP_EncryptUpdate(self->ctx, NULL, &outl, p, HDR) != 1
            || EVP_EncryptUpdate(self->ctx, p + HDR, &outl, (const unsigned char *)bufs[i].buf, (int)slen) != 1
            || EVP_EncryptFinal_ex(self->ctx, p + HDR + slen, &outl) != 1
            || EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_GCM_GET_TAG, TAG, p + HDR + slen) != 1;
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (failed) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL AES-GCM encryption failed");
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    Py_DECREF(seqobj);
    return result;
}

/* split(data, k, slen) -> list of k bytes objects of slen bytes; the last one zero-padded */
static PyObject *seal_split(PyObject *mod, PyObject *args) {
    Py_buffer data;
    Py_ssize_t k, slen;
    if (!PyArg_ParseTuple(args, "y*nn", &data, &k, &slen))
        return NULL;
    PyObject *out = NULL;
    if (k < 1 || slen < 1 || data.len > k * slen || data.len <= (k - 1) * slen) {
        PyErr_Format(PyExc_ValueError, "%zd bytes do not make %zd shards of %zd", data.len, k, slen);
        goto done;
    }
    out = PyList_New(k);
    if (out == NULL)
        goto done;
    const char *src = (const char *)data.buf;
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t off = i * slen, n = data.len - off < slen ? data.len - off : slen;
        PyObject *b = PyBytes_FromStringAndSize(NULL, slen);
        if (b == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        memcpy(PyBytes_AS_STRING(b), src + off, (size_t)n);
        if (n < slen)
            memset(PyBytes_AS_STRING(b) + n, 0, (size_t)(slen - n));
        PyList_SET_ITEM(out, i, b);
    }
done:
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef Sealer_methods[] = {
    {"seal_frame", (PyCFunction)Sealer_seal_frame, METH_VARARGS,
     "seal_frame(shards, seq, version, ptype, flags, frame_id, au_seq, au_len, k, m, slen) -> bytes\n\n"
     "One sealed datagram per shard (header || ciphertext || tag, 48 + slen bytes each), back\n"
     "to back in one bytes object; datagram i gets sequence number seq + i and shard index i."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SealerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "punktfunk_native._seal.Sealer",
    .tp_doc = "Sealer(key, direction): AES-GCM for one direction of one punktfunk/1 session",
    .tp_basicsize = sizeof(Sealer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sealer_init,
    .tp_dealloc = (destructor)Sealer_dealloc,
    .tp_methods = Sealer_methods,
};

static PyMethodDef module_methods[] = {
    {"split", seal_split, METH_VARARGS,
     "split(data, k, slen) -> list[bytes]\n\n"
     "The k shards of an access unit, slen bytes each, the last one zero-padded."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef sealmodule = {
    PyModuleDef_HEAD_INIT, "_seal", "Batch AES-GCM sealing of punktfunk/1 datagrams (OpenSSL).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__seal(void) {
    if (PyType_Ready(&SealerType) < 0)
        return NULL;
    PyObject *mod = PyModule_Create(&sealmodule);
    if (mod == NULL)
        return NULL;
    Py_INCREF(&SealerType);
    if (PyModule_AddObject(mod, "Sealer", (PyObject *)&SealerType) < 0) {
        Py_DECREF(&SealerType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
