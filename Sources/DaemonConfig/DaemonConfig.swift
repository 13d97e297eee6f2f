// The DaemonConfig module.
