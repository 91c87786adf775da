"""Services for development, tests and benchmarks, not part of the product: a local S3 server (``devservices.s3``,
`make s3`), a local PostgreSQL (``devservices.postgres``, `make postgres`) and free loopback ports
(``devservices.ports``). They start their processes with the product's own helper (``lifecycle.processes``), but
nothing in ``core``, ``serving``, ``export`` or ``lifecycle`` imports them (tests/test_layering.py), so they are
neither in the wheel nor in the code a registered model carries.
"""
