"""The sandbox: real servers on this machine for the demo, the tests and the benchmarks.

Not part of the product: no module under seed/ imports it (tests/unit/test_structure.py
checks). `fab sandbox.up` (sandbox/tasks.py) builds it from environments/local.yml.

    servers   PostgreSQL and sshd (two app hosts: 127.0.0.1 and 127.0.0.2) under one root
    balancer  HAProxy in front of the app hosts, and lbctl (drain/undrain through its API)
    hosts     more app hosts in their own namespaces (multi-host tests, bench/fanout.py)
    origin    the example shop's git origin, built from example/ overlays
    wheels    the wheel cache the sandbox's hosts install from
    messy     a messy legacy export for the import demo
"""
