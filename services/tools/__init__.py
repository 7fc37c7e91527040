"""Tools around the services: webhook replay, the synthetic load generator and `make run`'s driver."""
