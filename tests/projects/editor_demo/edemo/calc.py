"""Code under test: edit it and the next run sees the change (hot reload)."""


def add(a, b):
    return a + b


def sub(a, b):
    return a - b
