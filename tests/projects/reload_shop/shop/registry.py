"""A registry that other modules fill when they are imported."""

PLUGINS = []


def register(cls):
    PLUGINS.append(cls)
    return cls
