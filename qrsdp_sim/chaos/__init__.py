"""The chaos soak (``benchmarks/chaos.py``): a multi-session, multi-symbol dual-write on the real
services while a seeded schedule kills and restarts them and feeds them hostile inputs, then a check
that nothing was lost or duplicated.

* :mod:`qrsdp_sim.chaos.schedule` -- the seeded fault plan (what, and at which observed progress);
* :mod:`qrsdp_sim.chaos.hostile` -- poison Kafka messages and hostile UDP datagrams, by kind;
* :mod:`qrsdp_sim.chaos.procs` -- the supervised service processes and their Kafka bridge children;
* :mod:`qrsdp_sim.chaos.verify` -- lake vs files, dbt build, listener vs ``itch-export``;
* :mod:`qrsdp_sim.chaos.soak` -- the run itself and its figures.

See docs/chaos.md.
"""
