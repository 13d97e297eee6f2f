print("virtiofsd: not yet")
