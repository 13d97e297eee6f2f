// The XattrMap module.
