"""``make bench-server``: the reference server's throughput, latency and memory side by side
with Socket.IO 4.8 (Node.js) and a bare aiohttp relay, on one seeded 1:1 chat workload.

The Python side starts the servers (:mod:`.targets`, pinned to CPU 0), creates users and
runs the Node.js load generator (``loadgen.mjs``, pinned to CPU 1) per offered level
(:mod:`.orchestrate`), then prints the tables and writes them into docs/PERFORMANCE.md
(:mod:`.report`). Run it with ``make bench-server`` or ``python -m benchmarks.server``.
"""
