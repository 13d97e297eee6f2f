import Posix

/// Why the sandbox could not be set up. Each case names the step that failed;
/// `description` is the one line shown to the user and says what to do.
public enum SandboxError: Error, Equatable, CustomStringConvertible {
    case unknownCapability(String)
    case sharedDirectory(String, Errno)
    case sharedDirectoryNotAbsolute(String)
    case sharedDirectoryNotADirectory(String)
    case chrootNeedsRoot
    case unshare(Errno)
    /// A set of ranges the kernel would refuse (too many, overlapping): the range or option, why.
    case invalidIDMap(String, String)
    case writeIDMap(String, Errno)
    case idMapToolMissing(String)
    case idMapTool(String, [String])
    case identity(String, Errno)
    case fork(Errno)
    case mountPrivate(Errno)
    case mountProc(Errno)
    case openProcSelfFD(Errno)
    case bindMount(String, Errno)
    case chdir(String, Errno)
    case pivotRoot(String, Errno)
    case unmountOldRoot(Errno)
    case chroot(String, Errno)
    case readFileLimit(Errno)
    case raiseFileLimit(requested: UInt64, hardLimit: UInt64, Errno)
    case capabilities(String)
    case noNewPrivileges(Errno)
    case seccompInit
    case seccompRule(String, Int32)
    case seccompLoad(Int32)

    public var description: String {
        switch self {
        case .unknownCapability(let name):
            return "modcaps: unknown capability \"\(name)\"; use names like chown, sys_admin (see capabilities(7))"
        case .sharedDirectory(let path, let e):
            return "shared directory \(path): \(e)"
        case .sharedDirectoryNotAbsolute(let path):
            return "shared directory \(path) must be an absolute path"
        case .sharedDirectoryNotADirectory(let path):
            return "shared directory \(path) is not a directory"
        case .chrootNeedsRoot:
            return "--sandbox=chroot needs root; run as root or use --sandbox=namespace (works unprivileged with user namespaces)"
        case .unshare(let e):
            return "unshare of the mount/pid/net namespaces: \(e); unprivileged runs need user namespaces (sysctl user.max_user_namespaces), otherwise use --sandbox=none inside another sandbox"
        case .writeIDMap(let file, let e):
            return "writing \(file): \(e); without root, ranges other than your own id are written by newuidmap/newgidmap from your subordinate ids (subuid(5))"
        case .invalidIDMap(let text, let why):
            return "invalid id map \(text): \(why)"
        case .idMapToolMissing(let name):
            return "\(name) not found: mapping ranges other than your own id needs the setuid \(name) (Debian package uidmap); or map only your own id, e.g. --\(name == "newuidmap" ? "uid" : "gid")-map=:0:$ID:1:"
        case .idMapTool(let tool, let arguments):
            let file = tool.hasSuffix("newuidmap") ? "/etc/subuid" : "/etc/subgid"
            return "\(tool) \(arguments.joined(separator: " ")) failed: every range other than your own id must be one of your subordinate ranges in \(file) (see subuid(5))"
        case .identity(let step, let e):
            return "taking an identity in the new user namespace: \(step): \(e); the maps must cover namespace id 0 or the daemon's own id"
        case .fork(let e):
            return "fork into the new pid namespace: \(e)"
        case .mountPrivate(let e):
            return "making the mount tree private: \(e)"
        case .mountProc(let e):
            return "mounting a fresh /proc: \(e); /proc may be partly hidden (e.g. inside a container), try --sandbox=chroot or --sandbox=none"
        case .openProcSelfFD(let e):
            return "opening /proc/self/fd: \(e); /proc must be mounted"
        case .bindMount(let path, let e):
            return "bind-mounting \(path) onto itself: \(e)"
        case .chdir(let path, let e):
            return "chdir to \(path): \(e)"
        case .pivotRoot(let path, let e):
            return "pivot_root into \(path): \(e)"
        case .unmountOldRoot(let e):
            return "detaching the old root: \(e)"
        case .chroot(let path, let e):
            return "chroot into \(path): \(e)"
        case .readFileLimit(let e):
            return "reading RLIMIT_NOFILE: \(e)"
        case .raiseFileLimit(let requested, let hard, let e):
            return "setting the open-file limit to \(requested) (hard limit \(hard)): \(e); ask for at most \(hard), or grant CAP_SYS_RESOURCE"
        case .capabilities(let step):
            return "dropping capabilities: \(step) failed; is the process allowed to change its capabilities (CAP_SETPCAP)?"
        case .noNewPrivileges(let e):
            return "prctl(PR_SET_NO_NEW_PRIVS): \(e)"
        case .seccompInit:
            return "seccomp: cannot create a filter (out of memory or unsupported action); try --seccomp=none to run without it"
        case .seccompRule(let name, let rc):
            return "seccomp: cannot allow \(name): \(Errno(-rc))"
        case .seccompLoad(let rc):
            return "seccomp: loading the filter failed: \(Errno(-rc)); the kernel needs CONFIG_SECCOMP_FILTER, or use --seccomp=none"
        }
    }
}
