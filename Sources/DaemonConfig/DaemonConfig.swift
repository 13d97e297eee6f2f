// The DaemonConfig module: the daemon's option model (`DaemonOptions`), both command-line
// syntaxes (`parseCommandLine`), and the texts the daemon prints (usage, version,
// vhost-user capabilities). Pure: no I/O; host checks come in through closures.

/// The daemon's version, printed by `--version`.
public let daemonVersion = "0.1.0"
