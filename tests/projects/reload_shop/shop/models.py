"""Classes the tests check with isinstance."""


class Item:
    kind = "item"

    def __init__(self, name, price):
        self.name = name
        self.price = price


class Widget(Item):
    kind = "widget"


class Gadget(Item):
    kind = "gadget"
