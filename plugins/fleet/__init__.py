"""punktfunk fleet: the ``_punktfunk._tcp`` mDNS record a host advertises where its
console listens, and ``punktfunk discover`` with Prometheus file_sd (a builtin plugin)."""
