#if canImport(Glibc)
import Glibc
#endif
import DaemonConfig

// Options first: help, version and capabilities print and exit; every error is
// one line on stderr and exit status 1, before any socket exists.
switch parseCommandLine(Array(CommandLine.arguments.dropFirst())) {
case .failure(let error):
    fail(error.description)
case .success(.help(let text)), .success(.version(let text)), .success(.printCapabilities(let text)):
    printOut(text)
    exit(0)
case .success(.run(let options)):
    // runDaemon checks the host first, once its logger exists.
    exit(runDaemon(options))
}
