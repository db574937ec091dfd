"""The reference punktfunk/1 client: ``punktfunk client HOST``.

Pairs with a PIN when needed, negotiates a session, receives the encrypted
FEC'd UDP stream, recovers lost shards, decodes with PyAV, reads the test
pattern's frame stamp to measure end-to-end latency (capture → decoded) and
reports loss/recovery/decode time to the host once per window.

- :mod:`.session` — connect, pair, negotiate, the control loop and reports
  (:class:`NativeClient`);
- :mod:`.receive` — the receive thread: datagrams → reassembly → decode → stamps;
- :mod:`.terminal` and :mod:`.cli` — what the person at the terminal sees, and the command.

The control framing (:mod:`punktfunk_native.control`) and the pairing
exchange (:mod:`punktfunk_native.pairing`) are shared with the host's plane.
"""

from punktfunk_native.client.cli import add_client_arguments, main_from_args, options_from_args
from punktfunk_native.client.session import (
    DEFAULT_PORT,
    EXIT_CONNECT,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PAIRING,
    ClientError,
    ClientOptions,
    NativeClient,
    PairingFailed,
)

__all__ = ["DEFAULT_PORT", "EXIT_CONNECT", "EXIT_ERROR", "EXIT_OK", "EXIT_PAIRING", "ClientError", "ClientOptions",
           "NativeClient", "PairingFailed", "add_client_arguments", "main_from_args", "options_from_args"]
