"""What several test modules share: no test module imports another (tests/unit/test_test_layout.py).

Fixtures shared by a directory's tests are in its conftest.py; what drives the system for the tests and the
benchmarks alike (the broker, synthetic traffic, the Graph API stand-in) is in devtools/.
"""
