"""Only the optional C helpers live here; everything else is in pyproject.toml.

``punktfunk_native._seal`` (batch AES-GCM sealing with OpenSSL) needs a C
compiler, the Python headers and OpenSSL's headers (Debian: gcc,
libssl-dev). When any of them is missing the build goes on without it and
the native data plane uses cryptography's AESGCM instead (slower per
datagram, same bytes on the wire).

``punktfunk_gamestream._fec`` (every FEC block of a GameStream frame through
ISA-L in one call, GIL released) needs only a C compiler and the Python
headers. Without it the GameStream FEC calls ISA-L through ctypes, once per
block (same parity bytes, a few microseconds more per block).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "punktfunk_native._seal",
            ["plugins/native/_seal.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "punktfunk_gamestream._fec",
            ["plugins/gamestream/_fec.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ],
)
