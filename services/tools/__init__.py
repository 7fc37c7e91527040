"""Operator tools that drive the services from outside: webhook replay and the synthetic load generator
(``wa-archive replay``, ``wa-archive loadgen``). Development drivers (``make run``, the demo) are in devtools/."""
