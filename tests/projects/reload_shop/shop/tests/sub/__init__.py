FLAG = "on"
