// The DaemonConfig module: both command-line syntaxes (`parseCommandLine`) into the option
// model (`Options.DaemonOptions`), and the texts the daemon prints (usage, version,
// vhost-user capabilities). Pure: no I/O; host checks come in through closures.

/// The daemon's version, printed by `--version`.
public let daemonVersion = "0.1.0"
