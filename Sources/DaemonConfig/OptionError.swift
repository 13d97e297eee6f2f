import Options

/// A command line the daemon refuses: one line naming the option and what is wrong with it.
/// The daemon prints `description` on stderr and exits with status 1.
public struct OptionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The option as the user spelled it (`--cache`, `-o cache`).
    public var option: String
    /// The whole one-line message.
    public var message: String

    public init(option: String, message: String) {
        self.option = option
        self.message = message
    }

    public var description: String { message }

    static func unknownOption(_ spelling: String, suggestion: String? = nil) -> OptionError {
        OptionError(option: spelling, message: "unknown option '\(spelling)'" + (suggestion.map { "; did you mean '\($0)'?" } ?? ""))
    }

    static func missingValue(_ spelling: String) -> OptionError {
        OptionError(option: spelling, message: "option '\(spelling)' needs a value")
    }

    static func unexpectedValue(_ spelling: String) -> OptionError {
        OptionError(option: spelling, message: "option '\(spelling)' does not take a value")
    }

    static func invalidValue(_ spelling: String, _ value: String, expected: String) -> OptionError {
        OptionError(option: spelling, message: "invalid value '\(value)' for '\(spelling)': \(expected)")
    }

    static func conflict(_ first: String, _ second: String) -> OptionError {
        OptionError(option: first, message: "options '\(first)' and '\(second)' cannot be used together")
    }

    static let missingEndpoint = OptionError(
        option: "--socket-path",
        message: "no vhost-user socket: give '--socket-path=PATH' or '--fd=N' (or '--fuse-mount=MOUNTPOINT')")

    static let missingSharedDir = OptionError(
        option: "--shared-dir",
        message: "no shared directory: give '--shared-dir=DIR' or '-o source=DIR'")
}

/// What the host says about a directory named on the command line.
public enum DirectoryCheck: Sendable, Equatable {
    case directory
    case missing
    case notADirectory
    /// It cannot be reached or read; the reason as strerror(3) words ("Permission denied").
    case inaccessible(String)
}

/// Checks that need the host, given as a closure so the parser stays pure:
/// the daemon passes a real `stat`/`access`, tests pass a fake. Returns nil when all is well.
public func validateEnvironment(_ o: DaemonOptions, checkDirectory: (String) -> DirectoryCheck) -> OptionError? {
    if let dir = o.sharedDir, let problem = directoryProblem(checkDirectory(dir), "shared directory '\(dir)'") {
        return OptionError(option: "--shared-dir", message: problem)
    }
    if let mountpoint = o.fuseMount, let problem = directoryProblem(checkDirectory(mountpoint), "mount point '\(mountpoint)'") {
        return OptionError(option: "--fuse-mount", message: problem)
    }
    return nil
}

func directoryProblem(_ check: DirectoryCheck, _ what: String) -> String? {
    switch check {
    case .directory: return nil
    case .missing: return "\(what) does not exist"
    case .notADirectory: return "\(what) is not a directory"
    case .inaccessible(let reason): return "\(what): \(reason)"
    }
}
