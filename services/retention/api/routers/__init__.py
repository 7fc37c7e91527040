"""One router per resource of the admin API; :func:`services.retention.api.routers.setup.setup_routers` mounts
them."""
