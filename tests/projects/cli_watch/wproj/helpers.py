from wproj.calc import add


def double(x):
    return add(x, x)
