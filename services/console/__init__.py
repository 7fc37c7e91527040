"""The review console: a browser-facing adapter over the action layer (services/actions/layer.py)."""
