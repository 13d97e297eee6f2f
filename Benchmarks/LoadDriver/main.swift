print("virtiofsd-bench: not yet")
