"""What drives the system from outside during development, never installed (the wheel holds ``services`` only).

``make run``'s driver (devrun), the demo crisis and its media, the Graph API stand-in, the repository's sample
data and the in-process ASGI server that the tests, the benchmarks and ``make run`` share. Nothing under
``services/`` imports it (tests/unit/test_wheel.py builds the wheel and checks).
"""
